"""The hot path (Core statements with RETURNING) and the operations added for outages:
figures after hold/settle, grant burn order through the fast statements, renew_hold,
settle_unheld, the outbox's unheld charges, and recovery from dead pooled connections."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ledger_testlib import CR, USAGE, funded, sqlite_only
from sqlalchemy import create_engine, event, text
from test_ledger_concurrency import run_together

from ledger import Ledger, Settlement, UsageRecord
from ledger.outbox import Outbox, PendingCharge
from pricing.errors import (
    AccountNotFound,
    BillingUnavailable,
    HoldNotFound,
    InsufficientCredits,
    InvalidOperation,
)


def new_id(n: int) -> str:
    return f"{n:032x}"


# -- figures after hold and settle -------------------------------------------------------


def test_hold_and_settle_return_the_figures_they_wrote(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    hold = ledger.hold(acc, 3 * CR, ttl_seconds=60)
    assert (hold.balance_after, hold.available_after) == (10 * CR, 7 * CR)
    # not part of equality: get_hold (which does not know them) still compares equal
    assert ledger.get_hold(hold.id) == hold

    settled = ledger.settle(hold.id, 2 * CR, USAGE)
    b = ledger.balance(acc)
    assert (settled.balance_after, settled.available_after) == (b.balance, b.available) == (8 * CR, 8 * CR)

    # a repeat is equal to the first, and tells the figures as they are now
    other = ledger.hold(acc, CR, ttl_seconds=60)
    again = ledger.settle(hold.id, 2 * CR, USAGE)
    assert again == settled
    assert (again.balance_after, again.available_after) == (8 * CR, 7 * CR)
    ledger.void(other.id)


def test_late_settle_returns_figures(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    hold = ledger.hold(acc, 3 * CR, ttl_seconds=60)
    ledger.void(hold.id)
    late = ledger.settle(hold.id, CR, USAGE)
    assert late.late is True
    assert (late.balance_after, late.available_after) == (9 * CR, 9 * CR)


def test_settle_burns_grants_in_order_then_debt(ledger: Ledger) -> None:
    acc = ledger.open_account("user", "bob", tier="pro").id
    now = datetime.now(UTC)
    low = ledger.grant(acc, 5 * CR, source="purchase", priority=0)
    soon = ledger.grant(acc, 2 * CR, source="bonus", priority=1, expires_at=now + timedelta(days=1))
    late = ledger.grant(acc, 3 * CR, source="bonus", priority=1, expires_at=now + timedelta(days=9))
    gone = ledger.grant(acc, 50 * CR, source="bonus", priority=9, expires_at=now + timedelta(seconds=1))
    ledger.expire_grants(now + timedelta(seconds=2))  # nothing to burn from `gone` any more

    # one grant covers it: the single-statement case
    first = ledger.hold(acc, CR, ttl_seconds=60)
    ledger.settle(first.id, CR, USAGE)
    left = {g.id: g.remaining for g in ledger.grants(acc)}
    assert (left[soon.id], left[late.id], left[low.id], left[gone.id]) == (CR, 3 * CR, 5 * CR, 0)

    # spans three grants and runs into debt (settle may pass the overdraft limit)
    second = ledger.hold(acc, CR, ttl_seconds=60)
    settled = ledger.settle(second.id, 11 * CR, USAGE)
    left = {g.id: g.remaining for g in ledger.grants(acc)}
    assert (left[soon.id], left[late.id], left[low.id]) == (0, 0, 0)
    b = ledger.balance(acc)
    assert (b.balance, b.held, b.debt) == (-2 * CR, 0, 2 * CR)
    assert (settled.balance_after, settled.available_after) == (-2 * CR, -2 * CR)
    charges = [(e.grant_id, e.amount) for e in reversed(ledger.history(acc, limit=5)) if e.kind == "charge"]
    assert charges == [(soon.id, -CR), (late.id, -3 * CR), (low.id, -5 * CR), (None, -2 * CR)]


def test_grant_not_yet_swept_is_not_burned(ledger: Ledger, db_url: str) -> None:
    """A grant past its expiry but not swept yet is skipped by the one-statement burn."""
    acc = ledger.open_account("user", "carol", tier="pro").id
    now = datetime.now(UTC)
    stale = ledger.grant(acc, 5 * CR, source="bonus", priority=5, expires_at=now + timedelta(seconds=30))
    fresh = ledger.grant(acc, 5 * CR, source="purchase")
    later = Ledger(db_url, clock=lambda: now + timedelta(seconds=60))
    try:
        hold = later.hold(acc, CR, ttl_seconds=600)
        later.settle(hold.id, CR, USAGE)
        left = {g.id: g.remaining for g in later.grants(acc)}
        assert (left[stale.id], left[fresh.id]) == (5 * CR, 4 * CR)
        # before its expiry the higher priority grant burns first
        hold = ledger.hold(acc, CR, ttl_seconds=600)
        ledger.settle(hold.id, CR, USAGE)
        left = {g.id: g.remaining for g in later.grants(acc)}
        assert (left[stale.id], left[fresh.id]) == (4 * CR, 4 * CR)
    finally:
        later.dispose()


def test_free_settle_writes_no_charge_entry(ledger: Ledger) -> None:
    acc = funded(ledger, CR)
    hold = ledger.hold(acc, 10, ttl_seconds=60)
    ledger.settle(hold.id, 0, USAGE)
    assert [e.kind for e in ledger.history(acc, limit=3)] == ["release", "hold", "grant"]


# -- statement counts (what the bench measures; guards against regressions) --------------


@pytest.fixture
def statements(ledger: Ledger) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb != "BEGIN":  # SQLite's BEGIN IMMEDIATE
            seen.append(verb)

    engine = ledger._engine
    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_hold_and_settle_statement_counts(ledger: Ledger, statements: list[str]) -> None:
    acc = funded(ledger, 10 * CR)
    statements.clear()
    hold = ledger.hold(acc, CR, ttl_seconds=60)
    on_pg = ledger.dialect == "postgresql"
    assert len(statements) == (1 if on_pg else 3), statements
    statements.clear()
    ledger.settle(hold.id, CR // 2, USAGE)
    assert len(statements) == (1 if on_pg else 5), statements


# -- renew_hold --------------------------------------------------------------------------


def test_renew_hold_extends_an_open_hold(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    hold = ledger.hold(acc, CR, ttl_seconds=30)
    assert ledger.renew_hold(hold.id, 600) is True
    renewed = ledger.get_hold(hold.id).expires_at
    assert renewed - hold.expires_at > timedelta(seconds=500)
    # never shortens
    assert ledger.renew_hold(hold.id, 5) is True
    assert ledger.get_hold(hold.id).expires_at == renewed
    # the sweeper leaves it alone past its first expiry
    assert ledger.expire_stale_holds(datetime.now(UTC) + timedelta(seconds=60)) == 0
    assert ledger.get_hold(hold.id).status == "open"
    ledger.settle(hold.id, CR, USAGE)
    assert ledger.renew_hold(hold.id, 600) is False


def test_renew_hold_is_false_unless_open(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    voided = ledger.hold(acc, CR, ttl_seconds=30)
    ledger.void(voided.id)
    expired = ledger.hold(acc, CR, ttl_seconds=1)
    ledger.expire_stale_holds(datetime.now(UTC) + timedelta(seconds=5))
    assert ledger.renew_hold(voided.id, 60) is False
    assert ledger.renew_hold(expired.id, 60) is False
    assert ledger.renew_hold(new_id(7), 60) is False  # unknown (a fail-open hold id)
    assert ledger.get_hold(voided.id).status == "voided"
    with pytest.raises(InvalidOperation):
        ledger.renew_hold(voided.id, 0)


# -- settle_unheld -----------------------------------------------------------------------


def test_settle_unheld_charges_once(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    hold_id = new_id(1)
    first = ledger.settle_unheld(hold_id, acc, 2 * CR, USAGE)
    assert (first.hold_id, first.account_id, first.held, first.charged, first.late) == (
        hold_id,
        acc,
        0,
        2 * CR,
        False,
    )
    assert (first.balance_after, first.available_after) == (8 * CR, 8 * CR)
    # idempotent by hold id, whatever the amount of the repeat; settle agrees too
    assert ledger.settle_unheld(hold_id, acc, 5 * CR, USAGE) == first
    assert ledger.settle(hold_id, 5 * CR, USAGE) == first
    assert ledger.void(hold_id) is False
    assert ledger.renew_hold(hold_id, 60) is False

    row = ledger.get_hold(hold_id)
    assert (row.status, row.amount, row.charged) == ("settled", 0, 2 * CR)
    (event,) = ledger.usage(acc)
    assert (event.id, event.hold_id, event.charged, event.model) == (
        first.usage_event_id,
        hold_id,
        2 * CR,
        "gpt-4o",
    )
    assert [(e.kind, e.amount, e.held_delta) for e in ledger.history(acc)] == [
        ("charge", -2 * CR, 0),
        ("grant", 10 * CR, 0),
    ]
    b = ledger.balance(acc)
    assert (b.balance, b.held, b.debt) == (8 * CR, 0, 0)


def test_settle_unheld_passes_the_overdraft_limit_and_inactive_status(ledger: Ledger) -> None:
    acc = funded(ledger, CR, overdraft_limit=CR)
    ledger.set_status(acc, "suspended")
    settled = ledger.settle_unheld(new_id(2), acc, 5 * CR, USAGE)
    assert (settled.balance_after, settled.available_after) == (-4 * CR, -4 * CR)
    b = ledger.balance(acc)
    assert (b.balance, b.debt) == (-4 * CR, 4 * CR)
    ledger.set_status(acc, "active")
    with pytest.raises(InsufficientCredits):
        ledger.hold(acc, 1, ttl_seconds=60)


def test_settle_unheld_of_a_real_hold_settles_it(ledger: Ledger) -> None:
    """The hold was placed after all (its answer was lost): settle it, release and all."""
    acc = funded(ledger, 10 * CR)
    hold = ledger.hold(acc, 3 * CR, ttl_seconds=60)
    settled = ledger.settle_unheld(hold.id, acc, CR, USAGE)
    assert (settled.held, settled.charged, settled.late) == (3 * CR, CR, False)
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (9 * CR, 0)
    other = funded(ledger, CR, external_id="mallory")
    with pytest.raises(InvalidOperation):
        ledger.settle_unheld(hold.id, other, CR, USAGE)


def test_settle_unheld_validates(ledger: Ledger) -> None:
    acc = funded(ledger, CR)
    with pytest.raises(AccountNotFound):
        ledger.settle_unheld(new_id(3), 9999, 10, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.settle_unheld("", acc, 10, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.settle_unheld("x" * 33, acc, 10, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.settle_unheld(new_id(3), acc, -1, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.settle_unheld(new_id(3), acc, 1, UsageRecord(provider_cost_usd=0.1))  # type: ignore[arg-type]
    with pytest.raises(HoldNotFound):
        ledger.get_hold(new_id(3))  # nothing was written


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_concurrent_settle_unheld_charges_once(db_url: str) -> None:
    book = Ledger(db_url, pool_size=20, max_overflow=5, pool_timeout=60)
    book.create_schema()
    try:
        acc = funded(book, 100 * CR)
        results = run_together(40, lambda i: book.settle_unheld(new_id(i % 4), acc, CR, USAGE))
        assert all(isinstance(r, Settlement) for r in results), results
        assert len({r for r in results if isinstance(r, Settlement)}) == 4
        assert book.balance(acc).balance == 96 * CR
        assert len(book.usage(acc)) == 4
        assert book.audit() == []
    finally:
        book.dispose()


# -- outbox ------------------------------------------------------------------------------


def test_outbox_reads_old_lines_and_round_trips_account_id(tmp_path: Path) -> None:
    old = {
        "hold_id": new_id(1),
        "micro": 5,
        "usage": {**json.loads(PendingCharge(new_id(1), 5, USAGE).to_json())["usage"]},
    }
    assert "account_id" not in PendingCharge(new_id(1), 5, USAGE).to_json()
    loaded = PendingCharge.from_json(json.dumps(old))
    assert loaded == PendingCharge(new_id(1), 5, USAGE) and loaded.account_id is None
    unheld = PendingCharge(new_id(2), 7, USAGE, account_id=42)
    assert PendingCharge.from_json(unheld.to_json()) == unheld


def test_outbox_drain_charges_unheld_calls(ledger: Ledger, tmp_path: Path) -> None:
    acc = funded(ledger, 10 * CR)
    held = ledger.hold(acc, CR, ttl_seconds=60)
    box = Outbox(tmp_path / "outbox.jsonl")
    box.append(PendingCharge(held.id, CR // 2, USAGE))
    box.append(PendingCharge(new_id(11), 2 * CR, USAGE, account_id=acc))
    box.append(PendingCharge(new_id(12), 3 * CR, USAGE))  # no hold, no account: dropped as before
    box.append(PendingCharge(new_id(13), 3 * CR, USAGE, account_id=99_999))  # unknown account
    assert box.drain(ledger) == 2
    assert [c.hold_id for c in box.pending()] == []
    assert ledger.balance(acc).balance == 10 * CR - CR // 2 - 2 * CR
    # replaying the same lines (a crash before the rewrite) charges nothing twice
    box.append(PendingCharge(new_id(11), 2 * CR, USAGE, account_id=acc))
    assert box.drain(ledger) == 1
    assert ledger.balance(acc).balance == 10 * CR - CR // 2 - 2 * CR
    assert len(ledger.usage(acc)) == 2


# -- connections -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_dead_pooled_connections_fail_one_call_then_recover(ledger: Ledger, db_url: str) -> None:
    """No pre-ping: after the server dropped every connection, one call fails, then all work.

    The first call that meets a dead connection invalidates every connection the pool
    opened before it, so the ones after it get fresh connections. Each kind of call
    (autocommit hold, transactional settle, ORM read) in turn meets the dead pool first.
    """
    acc = funded(ledger, 100 * CR)
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")

    def kill_all() -> None:
        run_together(8, lambda _: ledger.balance(acc))  # several pooled connections, now idle
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed >= 2

    try:
        for first in ("hold", "settle", "balance"):
            hold = ledger.hold(acc, CR, ttl_seconds=60)
            kill_all()
            with pytest.raises(BillingUnavailable):
                if first == "hold":
                    ledger.hold(acc, CR, ttl_seconds=60)
                elif first == "settle":
                    ledger.settle(hold.id, CR, USAGE)
                else:
                    ledger.balance(acc)
            # every call after the failed one works, on any connection of the pool
            run_together(8, lambda _: ledger.balance(acc))
            ledger.void(ledger.hold(acc, CR, ttl_seconds=60).id)
            assert ledger.settle(hold.id, CR, USAGE).charged == CR
        assert ledger.balance(acc).held == 0
    finally:
        admin.dispose()


@sqlite_only
def test_sqlite_has_returning(ledger: Ledger) -> None:
    from ledger import hotpath

    assert hotpath.SQLITE_HAS_RETURNING
    assert ledger._fast

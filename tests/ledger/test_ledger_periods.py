"""Billing periods (allocation, rollover, expiry), tier changes, BYOK flags, period totals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from ledger_testlib import CR, USAGE, sqlite_only
from test_ledger_concurrency import run_together

from ledger import Ledger, PeriodResult, UsageRecord
from pricing.errors import InvalidOperation

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(JAN)


@pytest.fixture
def book(db_url: str, clock: Clock) -> Iterator[Ledger]:
    ledger = Ledger(db_url, clock=clock, pool_size=20)
    ledger.create_schema()
    try:
        yield ledger
        assert ledger.audit() == []
    finally:
        ledger.dispose()


def spend(ledger: Ledger, account_id: int, micro: int) -> None:
    hold = ledger.hold(account_id, 0, ttl_seconds=60)
    ledger.settle(hold.id, micro, USAGE)


def allocate(ledger: Ledger, acc: int, start: datetime, end: datetime, **rollover: object) -> PeriodResult:
    return ledger.allocate_period(
        acc,
        period_start=start,
        period_end=end,
        allocation_micro=100 * CR,
        **rollover,  # type: ignore[arg-type]
    )


def test_allocation_is_granted_once(book: Ledger) -> None:
    acc = book.open_account("team", "t1", tier="pro").id
    first = allocate(book, acc, JAN, FEB)
    assert first == PeriodResult(granted=100 * CR, rolled_over=0, expired=0, already_done=False)
    again = allocate(book, acc, JAN, FEB)
    assert again == PeriodResult(granted=100 * CR, rolled_over=0, expired=0, already_done=True)
    (grant,) = book.grants(acc)
    assert (grant.source, grant.expires_at, grant.external_ref) == (
        "subscription",
        FEB,
        f"alloc:{acc}:2026-01-01T00:00:00+00:00",
    )
    assert book.balance(acc).balance == 100 * CR


def test_rollover_carries_part_of_the_unused_allocation(book: Ledger, clock: Clock) -> None:
    acc = book.open_account("team", "t1", tier="pro").id
    allocate(book, acc, JAN, FEB)
    book.grant(acc, 7 * CR, source="purchase", external_ref="cs_1")
    spend(book, acc, 40 * CR)  # the allocation expires first, so it burns first: 60 unused

    clock.now = FEB
    result = allocate(book, acc, FEB, MAR, rollover_fraction=Decimal("0.5"), rollover_cap_micro=None)
    assert result == PeriodResult(granted=100 * CR, rolled_over=30 * CR, expired=60 * CR, already_done=False)
    by_source = {g.source: g for g in book.grants(acc)}
    assert by_source["rollover"].remaining == 30 * CR
    assert by_source["rollover"].expires_at == MAR
    assert by_source["rollover"].external_ref == f"rollover:{acc}:2026-02-01T00:00:00+00:00"
    assert by_source["purchase"].remaining == 7 * CR  # purchases are left alone
    assert book.balance(acc).balance == (100 + 30 + 7) * CR
    # The repeat reports the first run's numbers and moves nothing.
    assert allocate(book, acc, FEB, MAR, rollover_fraction=Decimal("0.5")) == PeriodResult(
        granted=100 * CR, rolled_over=30 * CR, expired=60 * CR, already_done=True
    )
    assert book.balance(acc).balance == 137 * CR


@sqlite_only
def test_rollover_cap_floor_and_own_expiry(book: Ledger, clock: Clock) -> None:
    acc = book.open_account("team", "t1", tier="pro").id
    allocate(book, acc, JAN, FEB)
    spend(book, acc, 1)  # 99.999999 cr unused
    clock.now = FEB
    later = MAR + timedelta(days=31)
    result = allocate(
        book,
        acc,
        FEB,
        MAR,
        rollover_fraction=Decimal("0.333333"),
        rollover_cap_micro=None,
        rollover_expires_at=later,
    )
    assert result.rolled_over == 33_333_299  # floor(99_999_999 * 0.333333)
    rollover = next(g for g in book.grants(acc) if g.source == "rollover")
    assert rollover.expires_at == later

    other = book.open_account("team", "t2", tier="pro").id
    clock.now = JAN
    allocate(book, other, JAN, FEB)
    clock.now = FEB
    capped = allocate(book, other, FEB, MAR, rollover_fraction=Decimal(1), rollover_cap_micro=25 * CR)
    assert (capped.rolled_over, capped.expired) == (25 * CR, 100 * CR)


@sqlite_only
def test_no_rollover_expires_the_last_allocation(book: Ledger, clock: Clock) -> None:
    acc = book.open_account("team", "t1", tier="pro").id
    allocate(book, acc, JAN, FEB)
    clock.now = FEB
    assert allocate(book, acc, FEB, MAR) == PeriodResult(100 * CR, 0, 100 * CR, False)
    assert book.balance(acc).balance == 100 * CR
    # An earlier rollover is not rolled over again, and older periods are left alone.
    clock.now = MAR
    result = allocate(book, acc, MAR, MAR + timedelta(days=31), rollover_fraction=Decimal(1))
    assert (result.rolled_over, result.expired) == (100 * CR, 100 * CR)


@sqlite_only
def test_rollover_survives_an_expiry_sweep_that_ran_first(book: Ledger, clock: Clock) -> None:
    acc = book.open_account("team", "t1", tier="pro").id
    allocate(book, acc, JAN, FEB)
    spend(book, acc, 20 * CR)
    clock.now = FEB
    assert book.expire_grants() == 1
    assert book.balance(acc).balance == 0
    result = allocate(book, acc, FEB, MAR, rollover_fraction=Decimal("0.5"))
    assert (result.rolled_over, result.expired) == (40 * CR, 0)
    assert book.balance(acc).balance == 140 * CR


def test_concurrent_allocations_grant_once(book: Ledger) -> None:
    acc = book.open_account("team", "t1", tier="pro").id
    results = run_together(10, lambda _: allocate(book, acc, JAN, FEB))
    assert all(isinstance(r, PeriodResult) for r in results), results
    assert sum(1 for r in results if isinstance(r, PeriodResult) and not r.already_done) == 1
    assert book.balance(acc).balance == 100 * CR


@sqlite_only
def test_allocation_arguments_are_checked(book: Ledger) -> None:
    acc = book.open_account("team", "t1", tier="pro").id
    with pytest.raises(InvalidOperation):
        allocate(book, acc, FEB, JAN)
    with pytest.raises(InvalidOperation):
        allocate(book, acc, JAN, FEB, rollover_fraction=Decimal("1.5"))
    with pytest.raises(InvalidOperation):
        allocate(book, acc, JAN, FEB, rollover_fraction=0.5)
    with pytest.raises(InvalidOperation):
        book.allocate_period(acc, period_start=JAN, period_end=FEB, allocation_micro=0)


@sqlite_only
def test_period_anchor_and_byok(book: Ledger, clock: Clock) -> None:
    plain = book.open_account("user", "u1", tier="free")
    assert (plain.period_anchor, plain.anchor, plain.byok) == (JAN, JAN, False)
    anchored = book.open_account("user", "u2", tier="pro", period_anchor=JAN + timedelta(days=14), byok=True)
    assert (anchored.period_anchor, anchored.byok) == (JAN + timedelta(days=14), True)
    assert book.set_byok(plain.id, True).byok is True
    assert book.set_period_anchor(plain.id, FEB).period_anchor == FEB
    key = book.issue_key(plain.id, byok=True).key
    assert key.byok is True
    assert book.lookup_key("nope") is None
    assert book.set_key_byok(key.id, False).byok is False
    assert book.issue_key(plain.id).key.byok is False


@sqlite_only
def test_list_accounts_pages_by_id(book: Ledger) -> None:
    ids = [book.open_account("user", f"u{n}", tier="free").id for n in range(5)]
    book.set_status(ids[2], "suspended")
    first = book.list_accounts(limit=2)
    assert [a.id for a in first] == ids[:2]
    rest = book.list_accounts(after_id=first[-1].id, limit=10)
    assert [a.id for a in rest] == [ids[3], ids[4]]
    assert [a.id for a in book.list_accounts(status=None)] == ids
    assert [a.id for a in book.list_accounts(status="suspended")] == [ids[2]]


def test_change_tier_with_proration_is_idempotent(book: Ledger) -> None:
    acc = book.open_account("team", "t1", tier="free").id
    book.schedule_tier_change(acc, "free", FEB)
    changed = book.change_tier(acc, "pro", prorated_micro=12 * CR, reference="up:1", reason="upgrade")
    assert (changed.tier, changed.pending_tier, changed.pending_tier_at) == ("pro", None, None)
    (grant,) = book.grants(acc)
    assert (grant.source, grant.amount, grant.external_ref) == ("proration", 12 * CR, "up:1")
    book.set_tier(acc, "team")
    # A late retry of the same change does nothing: no second grant, the newer tier stays.
    again = book.change_tier(acc, "pro", prorated_micro=12 * CR, reference="up:1", reason="upgrade")
    assert again.tier == "team"
    assert book.balance(acc).balance == 12 * CR
    assert book.change_tier(acc, "free", reference="down:1").tier == "free"
    with pytest.raises(InvalidOperation):
        book.change_tier(acc, "pro", reference="")


@sqlite_only
def test_scheduled_tier_changes_apply_when_due(book: Ledger) -> None:
    a = book.open_account("team", "a", tier="pro").id
    b = book.open_account("team", "b", tier="pro").id
    c = book.open_account("team", "c", tier="pro").id
    assert book.schedule_tier_change(a, "free", FEB).pending_tier == "free"
    book.schedule_tier_change(b, "team", MAR)
    book.schedule_tier_change(c, "free", FEB)
    book.cancel_tier_change(c)
    assert book.apply_due_tier_changes(FEB - timedelta(seconds=1)) == 0
    assert book.apply_due_tier_changes(FEB) == 1
    assert book.apply_due_tier_changes(FEB) == 0
    after = book.get_account(a)
    assert (after.tier, after.pending_tier, after.pending_tier_at) == ("free", None, None)
    assert book.get_account(b).tier == "pro"
    assert book.get_account(c).tier == "pro"
    assert book.apply_due_tier_changes(MAR) == 1
    assert book.get_account(b).tier == "team"


def test_period_usage_totals(book: Ledger, clock: Clock) -> None:
    acc = book.open_account("user", "u1", tier="pro").id
    book.grant(acc, 100 * CR, source="purchase")
    for cost, byok, micro in [("0.000225", False, 5), ("0.1", True, 7), ("1.000000000001", False, 11)]:
        hold = book.hold(acc, 0, ttl_seconds=60)
        book.settle(hold.id, micro, UsageRecord(model="m", provider_cost_usd=Decimal(cost), byok=byok))
    clock.now = FEB
    hold = book.hold(acc, 0, ttl_seconds=60)
    book.settle(hold.id, 100, UsageRecord(model="m", provider_cost_usd=Decimal("3")))

    january = book.period_usage_totals(acc, JAN, FEB)
    assert january.provider_cost_usd == Decimal("1.100225000001")
    assert january.byok_provider_cost_usd == Decimal("0.1")
    assert (january.charged, january.calls) == (23, 3)
    since_feb = book.period_usage_totals(acc, FEB)
    assert (since_feb.provider_cost_usd, since_feb.calls, since_feb.charged) == (Decimal(3), 1, 100)
    none = book.period_usage_totals(acc, MAR)
    assert (none.provider_cost_usd, none.byok_provider_cost_usd, none.charged, none.calls) == (0, 0, 0, 0)
    assert [e.byok for e in book.usage(acc, limit=10)] == [False, False, True, False]

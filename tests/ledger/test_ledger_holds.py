"""Holds: placing, settling exactly once, voiding, expiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from ledger_testlib import CR, USAGE, funded, raw_rows

from ledger import Ledger, UsageRecord
from pricing.errors import (
    AccountInactive,
    AccountNotFound,
    HoldNotFound,
    InsufficientCredits,
    InvalidOperation,
)


def test_hold_reserves_and_settle_charges(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    hold = ledger.hold(acc, 3 * CR, ttl_seconds=60, reference="call-1")
    assert len(hold.id) == 32 and hold.status == "open" and hold.amount == 3 * CR
    assert hold.expires_at - hold.created_at == timedelta(seconds=60)
    b = ledger.balance(acc)
    assert (b.balance, b.held, b.available) == (10 * CR, 3 * CR, 7 * CR)

    settled = ledger.settle(hold.id, 2 * CR, USAGE)
    assert (settled.hold_id, settled.account_id, settled.held, settled.charged) == (
        hold.id,
        acc,
        3 * CR,
        2 * CR,
    )
    assert settled.late is False
    b = ledger.balance(acc)
    assert (b.balance, b.held, b.available, b.debt) == (8 * CR, 0, 8 * CR, 0)
    after = ledger.get_hold(hold.id)
    assert (after.status, after.charged) == ("settled", 2 * CR)
    assert after.resolved_at is not None

    (event,) = ledger.usage(acc)
    assert event.id == settled.usage_event_id
    assert event.hold_id == hold.id
    assert event.provider_cost_usd == Decimal("0.000225")
    assert (event.model, event.provider, event.call_type) == ("gpt-4o", "openai", "acompletion")
    assert (event.tokens_in, event.tokens_out, event.charged) == (10, 20, 2 * CR)
    assert (event.user_id, event.team_id, event.end_user_id) == ("u1", "t1", "e1")
    assert (event.markup_rule, event.catalog_version, event.cache_hit, event.stream) == (
        "default",
        "abc123",
        False,
        False,
    )

    kinds = [(e.kind, e.amount, e.held_delta) for e in ledger.history(acc)]
    assert kinds == [
        ("charge", -2 * CR, 0),
        ("release", 0, -3 * CR),
        ("hold", 0, 3 * CR),
        ("grant", 10 * CR, 0),
    ]


def test_provider_cost_is_stored_exactly(ledger: Ledger) -> None:
    acc = funded(ledger, CR)
    cost = Decimal("12345678.123456789012")
    hold = ledger.hold(acc, 10, ttl_seconds=60)
    ledger.settle(hold.id, 10, UsageRecord(model="m", provider_cost_usd=cost))
    assert ledger.usage(acc)[0].provider_cost_usd == cost


def test_settle_twice_charges_once(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    hold = ledger.hold(acc, CR, ttl_seconds=60)
    first = ledger.settle(hold.id, CR // 2, USAGE)
    second = ledger.settle(hold.id, CR // 2, USAGE)
    # A retry with another amount still gets the first result: charges are final.
    third = ledger.settle(hold.id, 5 * CR, USAGE)
    assert first == second == third
    assert ledger.balance(acc).balance == 10 * CR - CR // 2
    assert len(ledger.usage(acc)) == 1


def test_settle_may_exceed_hold_and_overdraft(ledger: Ledger) -> None:
    acc = funded(ledger, CR)
    hold = ledger.hold(acc, CR, ttl_seconds=60)
    ledger.settle(hold.id, 3 * CR, USAGE)
    b = ledger.balance(acc)
    assert (b.balance, b.held, b.debt) == (-2 * CR, 0, 2 * CR)
    with pytest.raises(InsufficientCredits):
        ledger.hold(acc, 1, ttl_seconds=60)


def test_free_call_still_writes_usage(ledger: Ledger) -> None:
    acc = funded(ledger, CR)
    hold = ledger.hold(acc, 1000, ttl_seconds=60)
    settled = ledger.settle(hold.id, 0, UsageRecord(model="gpt-4o", cache_hit=True))
    assert settled.charged == 0
    assert ledger.balance(acc).balance == CR
    (event,) = ledger.usage(acc)
    assert event.cache_hit is True and event.charged == 0


def test_hold_refused_when_short(ledger: Ledger) -> None:
    acc = funded(ledger, 5 * CR)
    ledger.hold(acc, 4 * CR, ttl_seconds=60)
    with pytest.raises(InsufficientCredits) as refused:
        ledger.hold(acc, 1_500_000, ttl_seconds=60)
    assert refused.value.needed_credits == "1.5"
    assert refused.value.available_credits == "1"
    assert refused.value.account == "user:alice"
    # Exactly what is left still fits.
    ledger.hold(acc, CR, ttl_seconds=60)
    assert ledger.balance(acc).available == 0


def test_overdraft_limit_extends_what_can_be_held(ledger: Ledger) -> None:
    acc = funded(ledger, CR, overdraft_limit=2 * CR)
    ledger.hold(acc, 3 * CR, ttl_seconds=60)
    assert ledger.balance(acc).available == -2 * CR
    with pytest.raises(InsufficientCredits) as refused:
        ledger.hold(acc, 1, ttl_seconds=60)
    assert refused.value.available_credits == "0"


def test_hold_refused_when_inactive(ledger: Ledger) -> None:
    acc = funded(ledger, 5 * CR)
    for status in ("suspended", "past_due", "closed"):
        ledger.set_status(acc, status)
        with pytest.raises(AccountInactive) as refused:
            ledger.hold(acc, 1, ttl_seconds=60)
        assert refused.value.status == status
    with pytest.raises(AccountNotFound):
        ledger.hold(9999, 1, ttl_seconds=60)


def test_hold_validates(ledger: Ledger) -> None:
    acc = funded(ledger, CR)
    with pytest.raises(InvalidOperation):
        ledger.hold(acc, -1, ttl_seconds=60)
    with pytest.raises(InvalidOperation):
        ledger.hold(acc, 1, ttl_seconds=0)
    hold = ledger.hold(acc, 1, ttl_seconds=60)
    with pytest.raises(InvalidOperation):
        ledger.settle(hold.id, -5, USAGE)
    ledger.void(hold.id)


def test_void_releases_once(ledger: Ledger) -> None:
    acc = funded(ledger, 5 * CR)
    hold = ledger.hold(acc, 2 * CR, ttl_seconds=60)
    assert ledger.void(hold.id, "client went away") is True
    assert ledger.void(hold.id, "again") is False
    assert ledger.get_hold(hold.id).status == "voided"
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (5 * CR, 0)
    assert ledger.history(acc, limit=1)[0].reason == "client went away"
    with pytest.raises(HoldNotFound):
        ledger.void("0" * 32)
    with pytest.raises(HoldNotFound):
        ledger.settle("0" * 32, 1, USAGE)
    with pytest.raises(HoldNotFound):
        ledger.get_hold("nope")


def test_void_after_settle_is_refused(ledger: Ledger) -> None:
    acc = funded(ledger, 5 * CR)
    hold = ledger.hold(acc, 2 * CR, ttl_seconds=60)
    ledger.settle(hold.id, CR, USAGE)
    assert ledger.void(hold.id) is False
    assert ledger.get_hold(hold.id).status == "settled"
    assert ledger.balance(acc).balance == 4 * CR


@pytest.mark.parametrize("resolve", ["void", "expire"])
def test_settle_after_void_or_expiry_still_charges_once(ledger: Ledger, resolve: str) -> None:
    acc = funded(ledger, 5 * CR)
    hold = ledger.hold(acc, 2 * CR, ttl_seconds=60)
    if resolve == "void":
        assert ledger.void(hold.id)
    else:
        assert ledger.expire_stale_holds(datetime.now(UTC) + timedelta(minutes=5)) == 1
    settled = ledger.settle(hold.id, CR, USAGE)
    assert settled.late is True and settled.charged == CR
    assert ledger.settle(hold.id, CR, USAGE) == settled
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (4 * CR, 0)
    hold_after = ledger.get_hold(hold.id)
    assert hold_after.status == ("voided" if resolve == "void" else "expired")
    assert hold_after.charged == CR
    assert [e.kind for e in ledger.history(acc)].count("release") == 1


def test_expire_stale_holds(ledger: Ledger) -> None:
    acc = funded(ledger, 10 * CR)
    short = [ledger.hold(acc, CR, ttl_seconds=30) for _ in range(3)]
    long = ledger.hold(acc, CR, ttl_seconds=3600)
    settled = ledger.hold(acc, CR, ttl_seconds=1)
    ledger.settle(settled.id, CR, USAGE)
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert ledger.expire_stale_holds(later) == 3
    assert ledger.expire_stale_holds(later) == 0
    assert {ledger.get_hold(h.id).status for h in short} == {"expired"}
    assert ledger.get_hold(long.id).status == "open"
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (9 * CR, CR)
    with pytest.raises(InvalidOperation):
        ledger.expire_stale_holds(datetime(2030, 1, 1))  # naive: refused


def test_hold_ids_are_unguessable_and_unique(ledger: Ledger, db_url: str) -> None:
    acc = funded(ledger, CR)
    ids = {ledger.hold(acc, 1, ttl_seconds=60).id for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(raw_rows(db_url, "holds")) == 50


def test_history_and_usage_are_newest_first_and_limited(ledger: Ledger) -> None:
    acc = funded(ledger, 100 * CR)
    for n in range(5):
        hold = ledger.hold(acc, CR, ttl_seconds=60, reference=f"call-{n}")
        ledger.settle(hold.id, n + 1, UsageRecord(model=f"m{n}"))
    usage = ledger.usage(acc, limit=3)
    assert [u.model for u in usage] == ["m4", "m3", "m2"]
    history = ledger.history(acc, limit=4)
    assert [e.id for e in history] == sorted((e.id for e in history), reverse=True)
    assert history[0].kind == "charge" and history[0].reference == "call-4"
    assert len(ledger.history(acc, limit=1000)) == 1 + 5 * 3


def test_provider_cost_must_be_decimal(ledger: Ledger) -> None:
    acc = funded(ledger, CR)
    hold = ledger.hold(acc, 10, ttl_seconds=60)
    with pytest.raises(InvalidOperation):
        ledger.settle(hold.id, 10, UsageRecord(provider_cost_usd=0.1))  # type: ignore[arg-type]
    ledger.void(hold.id)

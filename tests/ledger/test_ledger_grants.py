"""Grants: idempotency, burn-down order, debt, expiry, refunds and adjustments."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from ledger_testlib import CR, USAGE, funded

from ledger import Ledger
from pricing.errors import AccountNotFound, InvalidOperation

NOW = datetime.now(UTC)


def charge(ledger: Ledger, account_id: int, micro: int) -> None:
    hold = ledger.hold(account_id, 0, ttl_seconds=60)
    ledger.settle(hold.id, micro, USAGE)


def test_grant_adds_credit(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    grant = ledger.grant(acc, 5 * CR, source="purchase", external_ref="cs_1", reason="pack S", priority=2)
    assert (grant.amount, grant.remaining, grant.source, grant.priority) == (5 * CR, 5 * CR, "purchase", 2)
    assert (grant.external_ref, grant.reason, grant.expires_at) == ("cs_1", "pack S", None)
    assert ledger.balance(acc).balance == 5 * CR
    (entry,) = ledger.history(acc)
    assert (entry.kind, entry.amount, entry.grant_id, entry.reference) == ("grant", 5 * CR, grant.id, "cs_1")


def test_grant_is_idempotent_by_external_ref(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    first = ledger.grant(acc, 5 * CR, source="purchase", external_ref="evt_1")
    again = ledger.grant(acc, 5 * CR, source="purchase", external_ref="evt_1")
    assert again == first
    assert ledger.balance(acc).balance == 5 * CR
    other = ledger.open_account("user", "bob", tier="free")
    with pytest.raises(InvalidOperation):
        ledger.grant(other.id, 5 * CR, source="purchase", external_ref="evt_1")


def test_concurrent_grants_with_one_ref_grant_once(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        grants = list(
            pool.map(lambda _: ledger.grant(acc, CR, source="purchase", external_ref="evt_race"), range(16))
        )
    assert len({g.id for g in grants}) == 1
    assert ledger.balance(acc).balance == CR


def test_grant_validates(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    for bad in (0, -1):
        with pytest.raises(InvalidOperation):
            ledger.grant(acc, bad, source="purchase")
    with pytest.raises(InvalidOperation):
        ledger.grant(acc, CR, source=" ")
    with pytest.raises(InvalidOperation):
        ledger.grant(acc, CR, source="purchase", external_ref="")
    with pytest.raises(InvalidOperation):
        ledger.grant(acc, CR, source="purchase", expires_at=datetime(2030, 1, 1))
    with pytest.raises(AccountNotFound):
        ledger.grant(9999, CR, source="purchase")


def test_burn_down_order(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    oldest = ledger.grant(acc, 10, source="purchase")
    newer = ledger.grant(acc, 10, source="purchase")
    later_expiry = ledger.grant(acc, 10, source="subscription", expires_at=NOW + timedelta(days=20))
    soon_expiry = ledger.grant(acc, 10, source="subscription", expires_at=NOW + timedelta(days=2))
    bonus = ledger.grant(acc, 10, source="bonus", priority=5)

    expected = [bonus, soon_expiry, later_expiry, oldest, newer]
    assert [g.id for g in ledger.grants(acc)] == [g.id for g in expected]
    left = {g.id: g.remaining for g in expected}
    for step in range(5):
        charge(ledger, acc, 7)
        # Each charge takes the head of the order first, spilling over into the next.
        taken = 7
        for g in expected:
            take = min(taken, left[g.id])
            left[g.id] -= take
            taken -= take
        assert {g.id: g.remaining for g in ledger.grants(acc)} == left, f"after charge {step + 1}"
    assert ledger.balance(acc).balance == 50 - 35

    charges = [e for e in ledger.history(acc) if e.kind == "charge"]
    assert all(e.grant_id is not None for e in charges)
    assert sum(e.amount for e in charges) == -35


def test_charge_beyond_grants_becomes_debt_and_next_grant_pays_it(ledger: Ledger) -> None:
    acc = funded(ledger, 10)
    charge(ledger, acc, 25)
    b = ledger.balance(acc)
    assert (b.balance, b.debt) == (-15, 15)
    (debt_entry,) = [e for e in ledger.history(acc) if e.kind == "charge" and e.grant_id is None]
    assert debt_entry.amount == -15

    small = ledger.grant(acc, 10, source="purchase")
    assert small.remaining == 0
    b = ledger.balance(acc)
    assert (b.balance, b.debt) == (-5, 5)

    big = ledger.grant(acc, 100, source="purchase")
    assert big.remaining == 95
    b = ledger.balance(acc)
    assert (b.balance, b.debt, b.available) == (95, 0, 95)


def test_expire_grants(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    expiring = ledger.grant(acc, 100, source="subscription", expires_at=NOW + timedelta(days=1))
    ledger.grant(acc, 50, source="purchase")
    charge(ledger, acc, 30)  # burns the expiring grant first
    assert ledger.expire_grants(NOW) == 0
    later = NOW + timedelta(days=2)
    assert ledger.expire_grants(later) == 1
    assert ledger.expire_grants(later) == 0
    grants = {g.id: g for g in ledger.grants(acc)}
    assert grants[expiring.id].remaining == 0
    b = ledger.balance(acc)
    assert b.balance == 50
    expire = ledger.history(acc, limit=1)[0]
    assert (expire.kind, expire.amount, expire.grant_id) == ("expire", -70, expiring.id)
    assert [g.id for g in ledger.grants(acc, live_only=True)] != [expiring.id]


def test_expired_grant_is_not_burned_before_the_sweep(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    past = ledger.grant(acc, 100, source="bonus", priority=9, expires_at=NOW - timedelta(seconds=1))
    ledger.grant(acc, 100, source="purchase")
    charge(ledger, acc, 10)
    remaining = {g.id: g.remaining for g in ledger.grants(acc)}
    assert remaining[past.id] == 100
    assert ledger.expire_grants() == 1
    assert ledger.balance(acc).balance == 90


def test_refund_is_a_grant_idempotent_by_reference(ledger: Ledger) -> None:
    acc = funded(ledger, 10)
    refund = ledger.refund(acc, 5, reference="re_1", reason="bad answer")
    assert ledger.refund(acc, 5, reference="re_1") == refund
    assert (refund.source, refund.external_ref) == ("refund", "re_1")
    assert ledger.balance(acc).balance == 15
    assert ledger.history(acc, limit=1)[0].kind == "refund"
    with pytest.raises(InvalidOperation):
        ledger.refund(acc, 5, reference="")


def test_adjust(ledger: Ledger) -> None:
    acc = funded(ledger, 10)
    assert ledger.adjust(acc, 5, "goodwill").balance == 15
    assert ledger.history(acc, limit=1)[0].kind == "adjustment"
    b = ledger.adjust(acc, -20, "clawback", reference="ticket-9")
    assert (b.balance, b.debt) == (-5, 5)
    entries = [e for e in ledger.history(acc) if e.kind == "adjustment"]
    assert sum(e.amount for e in entries) == 5 - 20
    with pytest.raises(InvalidOperation):
        ledger.adjust(acc, 0, "nothing")
    with pytest.raises(InvalidOperation):
        ledger.adjust(acc, 5, "")

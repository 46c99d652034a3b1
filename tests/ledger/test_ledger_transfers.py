"""Transfers: strict on the source, once per reference, burn-down like a charge."""

from __future__ import annotations

import pytest
from ledger_testlib import CR, funded, sqlite_only
from test_ledger_concurrency import run_together

from ledger import Ledger, Transfer
from pricing.errors import AccountInactive, InsufficientCredits, InvalidOperation


def test_transfer_moves_credit(ledger: Ledger) -> None:
    src = funded(ledger, 0)
    ledger.grant(src, 3 * CR, source="purchase", priority=1)
    ledger.grant(src, 10 * CR, source="bonus")
    dst = funded(ledger, 0, external_id="bob")

    moved = ledger.transfer(src, dst, 5 * CR, reference="gift-1", reason="gift")
    assert (moved.from_account_id, moved.to_account_id, moved.amount, moved.reference) == (
        src,
        dst,
        5 * CR,
        "gift-1",
    )
    # Priority 1 burns first, then the rest: two debit entries, like a charge.
    assert [(e.account_id, e.kind, e.amount) for e in moved.debits] == [
        (src, "transfer", -3 * CR),
        (src, "transfer", -2 * CR),
    ]
    assert (moved.credit.account_id, moved.credit.kind, moved.credit.amount) == (dst, "transfer", 5 * CR)
    assert (moved.grant.source, moved.grant.external_ref) == ("transfer", "transfer:gift-1")
    assert ledger.balance(src).balance == 8 * CR
    assert ledger.balance(dst).balance == 5 * CR

    assert ledger.transfer(src, dst, 5 * CR, reference="gift-1") == moved
    assert ledger.balance(src).balance == 8 * CR
    with pytest.raises(InvalidOperation):
        ledger.transfer(dst, src, 1, reference="gift-1")


@sqlite_only
def test_transfer_is_strict_about_the_source(ledger: Ledger) -> None:
    src = funded(ledger, 5 * CR, overdraft_limit=CR)
    dst = funded(ledger, 0, external_id="bob")
    ledger.hold(src, 2 * CR, ttl_seconds=60)
    with pytest.raises(InsufficientCredits):
        ledger.transfer(src, dst, 4 * CR + 1, reference="t1")
    ledger.transfer(src, dst, 4 * CR, reference="t2")  # down to -overdraft_limit, not beyond
    b = ledger.balance(src)
    assert (b.balance, b.held, b.available, b.debt) == (CR, 2 * CR, -CR, 0)

    poor = funded(ledger, CR, external_id="carol", overdraft_limit=2 * CR)
    moved = ledger.transfer(poor, dst, 3 * CR, reference="t6")  # past its grants: debt
    assert [(e.amount, e.grant_id is None) for e in moved.debits] == [(-CR, False), (-2 * CR, True)]
    assert (ledger.balance(poor).balance, ledger.balance(poor).debt) == (-2 * CR, 2 * CR)
    ledger.set_status(src, "suspended")
    with pytest.raises(AccountInactive):
        ledger.transfer(src, dst, 1, reference="t3")
    with pytest.raises(InvalidOperation):
        ledger.transfer(dst, dst, 1, reference="t4")
    with pytest.raises(InvalidOperation):
        ledger.transfer(dst, src, 0, reference="t5")
    with pytest.raises(InvalidOperation):
        ledger.transfer(dst, src, 1, reference="")


def test_racing_transfers_both_ways_keep_the_books(db_url: str) -> None:
    book = Ledger(db_url, pool_size=30)
    book.create_schema()
    try:
        a, b = funded(book, 100 * CR), funded(book, 100 * CR, external_id="bob")

        def move(i: int) -> Transfer:
            # Same reference twice each: only one of each pair moves credit.
            src, dst = (a, b) if i % 4 < 2 else (b, a)
            return book.transfer(src, dst, CR, reference=f"r{i // 2}")

        results = run_together(40, move)
        assert [r for r in results if not isinstance(r, Transfer)] == []
        assert len({r.grant.id for r in results if isinstance(r, Transfer)}) == 20
        assert book.balance(a).balance + book.balance(b).balance == 200 * CR
        assert book.balance(a).balance == 100 * CR  # 10 each way
        assert book.audit() == []
    finally:
        book.dispose()

"""Billing periods on SQLite and PostgreSQL: allocation once, rollover to the credit, replicas."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from credit_hooks.periods import prorated_upgrade_micro, run_periods, run_periods_exclusive
from ledger import Ledger
from pricing import load_catalog

from .gate_harness import PLANS

MICRO = 1_000_000
ANCHOR = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)
CATALOG = load_catalog(PLANS)


def pro_account(ledger: Ledger, name: str = "ana") -> int:
    account = ledger.open_account("user", name, tier="pro")
    ledger.grant(account.id, 1000 * MICRO, source="purchase", external_ref=f"buy-{name}")
    ledger.set_period_anchor(account.id, ANCHOR)
    return account.id


def spend(ledger: Ledger, account_id: int, credits: int) -> None:
    from ledger import UsageRecord

    hold = ledger.hold(account_id, credits * MICRO, ttl_seconds=60)
    ledger.settle(hold.id, credits * MICRO, UsageRecord(model="gpt-4o"))


def test_a_period_is_allocated_once_however_often_the_job_runs(ledger: Ledger) -> None:
    account_id = pro_account(ledger)
    now = datetime(2027, 2, 1, tzinfo=UTC)

    first = run_periods(ledger, CATALOG, now)
    second = run_periods(ledger, CATALOG, now)

    assert (first.allocated, second.allocated) == (1, 0)
    subscription = [g for g in ledger.grants(account_id) if g.source == "subscription"]
    assert [g.amount for g in subscription] == [1000 * MICRO]
    assert subscription[0].expires_at == datetime(2027, 2, 28, 9, 0, tzinfo=UTC)  # the account's own cycle
    assert ledger.balance(account_id).balance == 2000 * MICRO


def test_two_replicas_running_the_job_at_once_allocate_once(db_url: str) -> None:
    setup = Ledger(db_url)
    setup.create_schema()
    ids = [pro_account(setup, f"user{i}") for i in range(20)]
    now = datetime(2027, 2, 1, tzinfo=UTC)
    start = threading.Barrier(4)
    replicas = [Ledger(db_url) for _ in range(4)]

    def replica(book: Ledger, exclusive: bool) -> None:
        start.wait()
        if exclusive:
            run_periods_exclusive(book, CATALOG, now)
        else:
            run_periods(book, CATALOG, now)  # even without the lease: the ledger keys it per period

    threads = [threading.Thread(target=replica, args=(book, i % 2 == 0)) for i, book in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for account_id in ids:
        amounts = [g.amount for g in setup.grants(account_id) if g.source == "subscription"]
        assert amounts == [1000 * MICRO]
        assert setup.balance(account_id).balance == 2000 * MICRO
    assert setup.audit() == []
    for book in [setup, *replicas]:
        book.dispose()


def test_rollover_carries_its_cap_and_expires_to_the_credit(ledger: Ledger) -> None:
    account_id = pro_account(ledger)
    run_periods(ledger, CATALOG, datetime(2027, 2, 1, tzinfo=UTC))
    spend(ledger, account_id, 200)  # burns the allocation first: it expires soonest

    run_periods(ledger, CATALOG, datetime(2027, 2, 28, 9, 0, tzinfo=UTC))  # the next period starts

    grants = {g.source: g for g in ledger.grants(account_id, live_only=True)}
    # 800 unused x 50% = 400, capped at 300; the other 500 expire with the period
    assert grants["rollover"].amount == 300 * MICRO
    assert grants["rollover"].expires_at == datetime(2027, 3, 10, 9, 0, tzinfo=UTC)  # 10 days after
    assert grants["subscription"].expires_at == datetime(2027, 3, 31, 9, 0, tzinfo=UTC)
    assert ledger.balance(account_id).balance == (1000 + 300 + 1000) * MICRO
    expired = [e for e in ledger.history(account_id, limit=100) if e.kind == "expire"]
    assert sum(e.amount for e in expired) == -800 * MICRO

    run_periods(ledger, CATALOG, datetime(2027, 3, 10, 9, 0, tzinfo=UTC))  # the rollover's own expiry
    assert ledger.balance(account_id).balance == (1000 + 1000) * MICRO
    # purchased credits never expire with a period
    assert any(g.source == "purchase" and g.remaining == 1000 * MICRO for g in ledger.grants(account_id))


def test_a_tier_change_at_period_end_is_applied_by_the_job(ledger: Ledger) -> None:
    account_id = pro_account(ledger)
    ledger.schedule_tier_change(account_id, "business", datetime(2027, 2, 28, 9, 0, tzinfo=UTC))

    run_periods(ledger, CATALOG, datetime(2027, 2, 20, tzinfo=UTC))
    assert ledger.get_account(account_id).tier == "pro"
    run_periods(ledger, CATALOG, datetime(2027, 2, 28, 9, 0, tzinfo=UTC))
    assert ledger.get_account(account_id).tier == "business"
    latest = max((g for g in ledger.grants(account_id) if g.source == "subscription"), key=lambda g: g.id)
    assert latest.amount == 5000 * MICRO  # the new tier's allocation for the new period


def test_an_immediate_upgrade_is_prorated_for_the_rest_of_the_period() -> None:
    start, end = datetime(2027, 2, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC)
    halfway = datetime(2027, 2, 15, tzinfo=UTC)
    pro, business = CATALOG.tier("pro"), CATALOG.tier("business")

    assert prorated_upgrade_micro(pro, business, (start, end), halfway) == 2000 * MICRO  # 4000 x 14/28
    assert prorated_upgrade_micro(business, pro, (start, end), halfway) == 0  # a downgrade grants nothing
    assert prorated_upgrade_micro(pro, business, (start, end), end) == 0


def test_the_period_pass_leaves_the_books_balanced(ledger: Ledger, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        pro_account(ledger, name)
    for month in (2, 3, 4):
        run_periods(ledger, CATALOG, datetime(2027, month, 28, 12, tzinfo=UTC))
    assert ledger.audit() == []

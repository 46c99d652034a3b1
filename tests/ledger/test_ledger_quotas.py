"""Quota counters: all-or-nothing consumption, release, and the database doing the counting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from ledger_testlib import funded, sqlite_only
from test_ledger_concurrency import WORKERS, run_together

from ledger import Ledger, QuotaSpec
from pricing.errors import AccountNotFound, InvalidOperation, QuotaExceeded

DAY = datetime(2026, 3, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 4, 1, tzinfo=UTC)


def spec(scope: str, limit: int, start: datetime = DAY, end: datetime = MONTH_END) -> QuotaSpec:
    return QuotaSpec(scope=scope, window_start=start, window_end=end, limit=limit, what=f"{scope} calls")


def test_consume_counts_up_to_the_limit(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    q = spec("model:gpt-4o", 3)
    for _ in range(3):
        ledger.consume_quotas(acc, [q])
    assert ledger.quota_usage(acc, [q]) == [3]
    with pytest.raises(QuotaExceeded) as refused:
        ledger.consume_quotas(acc, [q])
    assert (refused.value.what, refused.value.limit, refused.value.resets_at) == (
        "model:gpt-4o calls",
        3,
        MONTH_END,
    )
    assert ledger.quota_usage(acc, [q]) == [3]


def test_one_check_at_its_limit_rolls_back_the_others(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    monthly, per_model = spec("calls", 10), spec("model:gpt-4o", 1)
    ledger.consume_quotas(acc, [monthly, per_model])
    with pytest.raises(QuotaExceeded) as refused:
        ledger.consume_quotas(acc, [monthly, per_model])
    assert refused.value.what == "model:gpt-4o calls"
    assert ledger.quota_usage(acc, [monthly, per_model]) == [1, 1]


def test_windows_and_accounts_count_apart(ledger: Ledger) -> None:
    acc, other = funded(ledger, 0), funded(ledger, 0, external_id="bob")
    march, april = spec("calls", 1), spec("calls", 1, MONTH_END, MONTH_END + timedelta(days=30))
    ledger.consume_quotas(acc, [march])
    ledger.consume_quotas(acc, [april])
    ledger.consume_quotas(other, [march])
    assert ledger.quota_usage(acc, [march, april]) == [1, 1]
    assert ledger.quota_usage(other, [march, april]) == [1, 0]


@sqlite_only
def test_release_gives_a_call_back_never_below_zero(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    q = spec("calls", 2)
    ledger.consume_quotas(acc, [q])
    ledger.consume_quotas(acc, [q])
    ledger.release_quotas(acc, [q])
    assert ledger.quota_usage(acc, [q]) == [1]
    ledger.consume_quotas(acc, [q])
    for _ in range(4):
        ledger.release_quotas(acc, [q])
    assert ledger.quota_usage(acc, [q]) == [0]
    ledger.release_quotas(acc, [spec("never-used", 5)])  # no counter: nothing to do
    assert ledger.quota_usage(acc, [spec("never-used", 5)]) == [0]


@sqlite_only
def test_zero_limit_and_bad_input(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    with pytest.raises(QuotaExceeded):
        ledger.consume_quotas(acc, [spec("calls", 0)])
    with pytest.raises(InvalidOperation):
        ledger.consume_quotas(acc, [spec("", 1)])
    with pytest.raises(InvalidOperation):
        ledger.consume_quotas(acc, [spec("calls", 1, start=datetime(2026, 3, 1))])
    with pytest.raises(AccountNotFound):
        ledger.consume_quotas(9999, [spec("calls", 1)])
    ledger.consume_quotas(acc, [])


@dataclass(frozen=True)
class PricingStyleCheck:
    """Shaped like pricing's QuotaCheck: any object with these attributes will do."""

    scope: str
    window_start: datetime
    window_end: datetime
    limit: int
    what: str


@sqlite_only
def test_accepts_any_object_with_the_quota_attributes(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    check = PricingStyleCheck("calls", DAY, MONTH_END, 1, "monthly calls")
    ledger.consume_quotas(acc, [check])
    assert ledger.quota_usage(acc, [check]) == [1]


@sqlite_only
def test_prune_deletes_old_windows(ledger: Ledger) -> None:
    acc = funded(ledger, 0)
    old, new = spec("calls", 5, DAY - timedelta(days=31), DAY), spec("calls", 5)
    ledger.consume_quotas(acc, [old])
    ledger.consume_quotas(acc, [new])
    assert ledger.prune_quota_counters(DAY) == 1
    assert ledger.quota_usage(acc, [old, new]) == [0, 1]


@pytest.fixture
def race_ledger(db_url: str) -> Iterator[Ledger]:
    book = Ledger(db_url, pool_size=WORKERS, max_overflow=5, pool_timeout=60)
    book.create_schema()
    try:
        yield book
    finally:
        book.dispose()


def test_concurrent_consumers_get_exactly_the_limit(race_ledger: Ledger) -> None:
    acc = funded(race_ledger, 0)
    monthly, per_model = spec("calls", 10), spec("model:gpt-4o", 1000)
    # Half the callers list the checks in the other order: the ledger locks them in one order.
    results = run_together(
        50,
        lambda i: race_ledger.consume_quotas(acc, [monthly, per_model] if i % 2 else [per_model, monthly]),
    )
    passed = [r for r in results if r is None]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(passed), len(refused)) == (10, 40), [r for r in results if r is not None][:3]
    # The refused calls rolled back their per-model increment too.
    assert race_ledger.quota_usage(acc, [monthly, per_model]) == [10, 10]

"""Plans at the gate, on SQLite and PostgreSQL: quotas, their resets, max tokens, BYOK fees."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from credit_hooks.http_errors import to_proxy_exception
from ledger import Account, Ledger
from pricing.errors import ByokNotAllowed, MaxTokensExceeded, QuotaExceeded

from .gate_harness import Clock, admit, caller, finish, make_gate, run

MICRO = 1_000_000


def open_account(ledger: Ledger, name: str, tier: str, clock: Clock, credits: int = 1000) -> Account:
    account = ledger.open_account("user", name, tier=tier)
    ledger.grant(account.id, credits * MICRO, source="purchase", external_ref=f"buy-{name}")
    # the cycle starts on the 31st: periods end on the last day of shorter months
    ledger.set_period_anchor(account.id, datetime(2026, 1, 31, 9, 0, tzinfo=UTC))
    return ledger.get_account(account.id)


def test_a_per_model_daily_quota_resets_at_utc_midnight(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 10, 23, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "daily", "starter", clock)

    for _ in range(2):
        finish(gate, admit(gate, account, "gpt-3.5-turbo"), "gpt-3.5-turbo", "0.0001")
    with pytest.raises(QuotaExceeded) as caught:
        admit(gate, account, "gpt-3.5-turbo")

    assert caught.value.resets_at == datetime(2026, 2, 11, 0, 0, tzinfo=UTC)
    assert caught.value.limit == 2
    refused = to_proxy_exception(caught.value)
    assert (refused.code, refused.type) == ("429", "quota_exceeded")
    assert caught.value.retry_after_seconds(clock.now) == 3600  # 23:00 -> midnight
    assert "Retry-After" in refused.headers
    assert "2026-02-11T00:00:00Z" in refused.message
    assert ledger.balance(account.id).held == 0  # a refused call holds nothing

    clock.now = datetime(2026, 2, 11, 0, 0, tzinfo=UTC)  # exactly the reset instant
    admit(gate, account, "gpt-3.5-turbo")


def test_a_monthly_quota_resets_at_the_accounts_own_period_end(ledger: Ledger, tmp_path: Path) -> None:
    # anchor Jan 31 09:00: the period is [Jan 31 09:00, Feb 28 09:00)
    clock = Clock(datetime(2026, 2, 1, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "monthly", "starter", clock)

    for _ in range(3):
        finish(gate, admit(gate, account, "gpt-4o"), "gpt-4o", "0.001")
    with pytest.raises(QuotaExceeded) as caught:
        admit(gate, account, "gpt-4o")
    assert caught.value.resets_at == datetime(2026, 2, 28, 9, 0, tzinfo=UTC)

    clock.now = datetime(2026, 2, 28, 8, 59, 59, tzinfo=UTC)
    with pytest.raises(QuotaExceeded):
        admit(gate, account, "gpt-4o")
    clock.now = datetime(2026, 2, 28, 9, 0, tzinfo=UTC)  # not the calendar month: the account's cycle
    admit(gate, account, "gpt-4o")


def test_the_monthly_api_call_limit_counts_every_model(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "calls", "starter", clock)

    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022", "gpt-4o-mini"):
        finish(gate, admit(gate, account, model), model, "0.0001")
    with pytest.raises(QuotaExceeded) as caught:
        admit(gate, account, "gpt-4o-mini")

    assert caught.value.limit == 5
    assert caught.value.resets_at == datetime(2026, 3, 31, 9, 0, tzinfo=UTC)


def test_a_failed_call_gives_its_quota_slot_back(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "retry", "starter", clock)

    first = admit(gate, account, "gpt-3.5-turbo")
    assert run(gate.release(first.hold_id, "upstream failed")) is True
    assert run(gate.release(first.hold_id, "failure event again")) is False  # idempotent, no double refund

    for _ in range(2):
        admit(gate, account, "gpt-3.5-turbo")
    with pytest.raises(QuotaExceeded):
        admit(gate, account, "gpt-3.5-turbo")


def test_max_tokens_over_the_plan_is_refused_with_400(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "tokens", "starter", clock)

    with pytest.raises(MaxTokensExceeded) as caught:
        admit(gate, account, "gpt-4o-mini", max_tokens=257)
    refused = to_proxy_exception(caught.value)
    assert (refused.code, refused.type) == ("400", "max_tokens_exceeded")
    assert "256" in refused.message

    admit(gate, account, "gpt-4o-mini", max_tokens=256)
    # no max_tokens: the plan's cap bounds the worst case
    call = admit(gate, account, "gpt-4o-mini", max_tokens=None)
    assert call.quoted.micro_credits > 0
    assert ledger.balance(account.id).held > 0


def test_byok_pays_the_fee_after_the_monthly_allowance(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "byok", "pro", clock)
    ledger.set_byok(account.id, True)

    # the first $5 of provider cost in the period carries no fee
    assert finish(gate, admit(gate, account, "gpt-4o"), "gpt-4o", "4") == 0
    # $4 used: a $2 call pays 5% of the $1 beyond the allowance = $0.05 = 50 credits
    assert finish(gate, admit(gate, account, "gpt-4o"), "gpt-4o", "2") == 50 * MICRO
    # allowance gone: 5% of $0.005 is $0.00025, raised to the $0.001 minimum = 1 credit
    assert finish(gate, admit(gate, account, "gpt-4o"), "gpt-4o", "0.005") == 1 * MICRO
    events = ledger.usage(account.id)
    assert all(e.byok for e in events)
    assert {e.markup_rule for e in events} == {"byok:byok-standard"}


def test_byok_on_a_plan_without_it_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "nobyok", "business", clock)
    ledger.set_byok(account.id, True)

    with pytest.raises(ByokNotAllowed) as caught:
        admit(gate, account, "gpt-4o")
    assert to_proxy_exception(caught.value).code == "403"
    assert ledger.balance(account.id).held == 0


def test_quotas_hold_under_concurrent_calls(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "burst", "starter", clock)
    data = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async def burst() -> list[object]:
        calls = [gate.admit(caller(account), "gpt-3.5-turbo", "acompletion", dict(data)) for _ in range(12)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(burst())

    assert sum(not isinstance(r, BaseException) for r in results) == 2
    assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))


def test_a_model_nobody_can_price_is_held_at_the_fallback(ledger: Ledger, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))
    gate = make_gate(ledger, tmp_path, clock)
    account = open_account(ledger, "unpriced", "business", clock)

    call = admit(gate, account, "my-private-finetune", max_tokens=10)

    # not in LiteLLM's cost map nor the catalog: held at CREDITS_FALLBACK_HOLD_USD ($0.10 = 100 credits)
    assert call.quoted.micro_credits == 100 * MICRO
    assert ledger.balance(account.id).held == 100 * MICRO

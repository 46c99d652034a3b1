"""The ledger unreachable: fail closed (503), or fail open within a per-account cap, charged later."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from credit_hooks.gate import CreditGate
from credit_hooks.http_errors import to_proxy_exception
from ledger import Account, Ledger
from pricing.errors import BillingUnavailable

from .gate_harness import Clock, admit, make_gate, run, settle

MICRO = 1_000_000
# nothing listens on port 1: every call fails to connect, as when the database is down
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/credits"


def gate_with(ledger: Ledger, tmp_path: Path, policy: str, cap: str = "100") -> CreditGate:
    clock = Clock(datetime(2027, 2, 10, 12, 0, tzinfo=UTC))
    return make_gate(ledger, tmp_path, clock, outage_policy=policy, fail_open_exposure_credits=cap)


def known_account(ledger: Ledger, gate: CreditGate, name: str) -> Account:
    """An account the proxy has seen before the outage (its tier and status are cached)."""
    account = ledger.open_account("user", name, tier="business")
    ledger.grant(account.id, 100 * MICRO, source="purchase")
    run(gate.release(admit(gate, account, "gpt-4o-mini", max_tokens=10).hold_id, "warm-up"))
    return account


def test_fail_closed_refuses_with_503_and_serves_nothing(ledger: Ledger, tmp_path: Path) -> None:
    gate = gate_with(ledger, tmp_path, "fail_closed")
    account = known_account(ledger, gate, "closed")
    gate.ledger = Ledger(UNREACHABLE)

    with pytest.raises(BillingUnavailable) as caught:
        admit(gate, account, "gpt-4o-mini", max_tokens=10)

    refused = to_proxy_exception(caught.value)
    assert (refused.code, refused.type) == ("503", "billing_unavailable")
    assert "Retry-After" in refused.headers


def test_fail_open_serves_up_to_the_cap_and_charges_once_when_the_ledger_is_back(
    ledger: Ledger, tmp_path: Path
) -> None:
    gate = gate_with(ledger, tmp_path, "fail_open", cap="1")
    account = known_account(ledger, gate, "open")
    before = ledger.balance(account.id)
    gate.ledger = Ledger(UNREACHABLE)

    served = [admit(gate, account, "gpt-4o-mini", max_tokens=10) for _ in range(3)]
    assert all(call.offline for call in served)
    assert [settle(gate, call, "gpt-4o-mini", "0.0003") for call in served] == [None] * 3
    assert len(gate.outbox.pending()) == 3  # on disk, waiting for the ledger
    # 3 x 0.3 credits wait: a call whose worst case passes the 1-credit cap is refused
    with pytest.raises(BillingUnavailable) as caught:
        admit(gate, account, "gpt-4o-mini", max_tokens=100_000)
    assert "not yet written" in caught.value.message

    gate.ledger = ledger  # the database is back
    assert gate.outbox.drain(ledger) == 3
    assert gate.outbox.drain(ledger) == 0  # nothing left to replay
    assert len(ledger.usage(account.id)) == 3
    after = ledger.balance(account.id)
    assert before.balance - after.balance == 3 * 300_000  # $0.0003 = 0.3 credits, each once
    assert after.held == 0
    assert ledger.audit() == []


def test_fail_open_never_serves_an_account_it_has_not_seen(ledger: Ledger, tmp_path: Path) -> None:
    gate = gate_with(ledger, tmp_path, "fail_open")
    stranger = ledger.open_account("user", "stranger", tier="business")
    gate.ledger = Ledger(UNREACHABLE)

    with pytest.raises(BillingUnavailable):
        admit(gate, stranger, "gpt-4o-mini", max_tokens=10)

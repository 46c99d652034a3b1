"""The plugin as an operator gets it with no CREDITS_* tuning: settle journal and local escrow.

A charge is on disk (the journal) before the response ends and reaches the ledger in
batches; a rich account's calls borrow from an escrow hold. What a person reads
through the proxy must not show either: the balance and usage routes see every call
this proxy has answered, and an escrow's unlent credit counts as available.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from ledger import Ledger

from .proxy import RunningProxy
from .test_credit_gate import MICRO, client, open_account
from .test_escrow_local import CHARGE

pytestmark = pytest.mark.e2e

PROXY_SETTLE_ENV: dict[str, str] = {}  # the plugin's own defaults

# max_tokens 100 makes the worst case 2.05 credits, an escrow 1000 of them (2050
# credits) and "rich" 8 escrows: 16,400 credits
RICH_CREDITS = 100_000
CALLS = 3


def _routes(proxy: RunningProxy, key: str) -> tuple[dict[str, str], list[dict[str, object]]]:
    headers = {"Authorization": f"Bearer {key}"}
    balance = httpx.get(f"{proxy.base_url}/credits/balance", headers=headers, timeout=10)
    usage = httpx.get(f"{proxy.base_url}/credits/usage", headers=headers, timeout=10)
    assert balance.status_code == 200 and usage.status_code == 200
    return balance.json(), usage.json()["data"]


def _calls(proxy: RunningProxy, key: str) -> list[str]:
    remaining = []
    for _ in range(CALLS):
        raw = client(proxy, key).chat.completions.with_raw_response.create(
            model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=100
        )
        assert raw.headers["x-credits-charged"] == "0.45"
        remaining.append(raw.headers["x-credits-remaining"])
    return remaining


def test_the_defaults_are_the_journal_and_a_local_escrow(proxy: RunningProxy) -> None:
    assert "with settle journal, local escrow" in proxy.log()


def test_a_rich_account_reads_its_calls_at_once_and_no_escrow_as_held(
    proxy: RunningProxy, books: Ledger
) -> None:
    account, key = open_account(books, "rich-default", "pro", RICH_CREDITS)

    remaining = _calls(proxy, key)
    balance, usage = _routes(proxy, key)

    spent = Decimal(CALLS * CHARGE) / MICRO
    assert balance["balance_credits"] == str(RICH_CREDITS - spent)
    assert balance["held_credits"] == "0"
    assert balance["available_credits"] == str(RICH_CREDITS - spent) == remaining[-1]
    assert len(usage) == CALLS and all(e["charged_credits"] == "0.45" for e in usage)
    # the calls were lent from an escrow, which the ledger itself shows as held
    ledger_view = books.balance(account.id)
    assert ledger_view.balance == RICH_CREDITS * MICRO - CALLS * CHARGE
    assert ledger_view.held > 0
    assert any(e.kind == "hold" and e.reference == "escrow" for e in books.history(account.id, limit=50))


def test_an_account_too_poor_for_an_escrow_holds_per_call_and_reads_its_calls_at_once(
    proxy: RunningProxy, books: Ledger
) -> None:
    account, key = open_account(books, "plain-default", "pro", 100)

    _calls(proxy, key)
    balance, usage = _routes(proxy, key)

    spent = Decimal(CALLS * CHARGE) / MICRO
    assert balance["balance_credits"] == str(100 - spent)
    assert balance["held_credits"] == "0"
    assert len(usage) == CALLS
    assert books.balance(account.id).held == 0
    assert not any(e.reference == "escrow" for e in books.history(account.id, limit=50))


def test_a_failed_call_of_a_rich_account_counts_its_escrow_as_available(
    proxy: RunningProxy, books: Ledger
) -> None:
    _, key = open_account(books, "rich-broken", "pro", RICH_CREDITS)
    _calls(proxy, key)  # lent from an escrow

    with pytest.raises(openai.APIStatusError) as failed:
        client(proxy, key).chat.completions.create(
            model="demo-broken", messages=[{"role": "user", "content": "hi"}], max_tokens=100
        )

    spent = Decimal(CALLS * CHARGE) / MICRO
    assert failed.value.response.headers.get("x-credits-remaining") == str(RICH_CREDITS - spent)
    balance, _ = _routes(proxy, key)
    assert balance["held_credits"] == "0"

"""End to end with the fast paths together: settle journal, and calls lent from an escrow.

The escrow is small here (5 worst cases) so that a run of calls opens, refills and
replaces several of them; a module importing these tests may set another store.
"""

from __future__ import annotations

import openai
import pytest

from ledger import Ledger

from .proxy import RunningProxy
from .test_credit_gate import (  # collected here, against this module's proxy
    MICRO,
    client,
    open_account,
    test_an_account_that_cannot_cover_the_worst_case_gets_402,
    wait_for_usage,
)
from .test_settle_journal import concurrent_calls

pytestmark = pytest.mark.e2e

PROXY_ENV = {
    "CREDITS_SETTLE_MODE": "journal",
    "CREDITS_ESCROW": "local",
    "CREDITS_ESCROW_CALLS": "5",
    "CREDITS_ESCROW_RICH_FACTOR": "2",
}

__all__ = ["test_an_account_that_cannot_cover_the_worst_case_gets_402"]

CALLS = 40
CHARGE = 450_000  # demo-fast: 10 + 20 tokens of gpt-4o, x2


def _escrow_holds(books: Ledger, account_id: int) -> int:
    return sum(
        1 for e in books.history(account_id, limit=1000) if e.kind == "hold" and e.reference == "escrow"
    )


def test_the_proxy_lends_from_an_escrow(proxy: RunningProxy) -> None:
    assert "escrow" in proxy.log() and "settle journal" in proxy.log()


def test_calls_lent_from_escrows_are_each_charged_once(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "mona", "pro", 1000)
    assert len(concurrent_calls(client(proxy, key), CALLS)) == CALLS
    events = wait_for_usage(books, account.id, CALLS)
    assert len(events) == CALLS and len({e.hold_id for e in events}) == CALLS
    assert all(e.charged == CHARGE for e in events)
    balance = books.balance(account.id)
    assert balance.balance == 1000 * MICRO - CALLS * CHARGE
    # 40 calls of about 1 credit worst case from escrows of 5: several escrows; a call
    # that finds one dry while the next is opened takes a hold of its own instead, so
    # most but not all calls borrow; what escrows still hold is theirs until they expire
    escrows = _escrow_holds(books, account.id)
    assert escrows >= 3
    own_holds = [e.kind for e in books.history(account.id, limit=1000)].count("hold") - escrows
    assert own_holds < CALLS // 2
    assert balance.held <= 2 * 5 * 2 * MICRO  # at most two escrows' worth left held


def test_a_failed_call_gives_its_loan_back(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "nell", "pro", 1000)
    api = client(proxy, key)
    api.chat.completions.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=50
    )
    wait_for_usage(books, account.id, 1)
    with pytest.raises(openai.APIStatusError):
        api.chat.completions.create(
            model="demo-broken", messages=[{"role": "user", "content": "hi"}], max_tokens=50
        )
    assert len(books.usage(account.id)) == 1
    assert books.balance(account.id).balance == 1000 * MICRO - CHARGE

"""The credit gate end to end with the settle journal: charges on disk first, in the ledger soon after."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from ledger import Ledger
from pricing import usd_to_micro

from .proxy import RunningProxy
from .test_credit_gate import (  # collected here, against this module's proxy
    MICRO,
    USD_PER_CREDIT,
    client,
    litellm_cost,
    open_account,
    test_a_failed_upstream_call_releases_the_hold,
    test_a_tier_without_the_model_gets_403,
    test_an_account_that_cannot_cover_the_worst_case_gets_402,
    wait_for_usage,
    wait_until_released,
)

pytestmark = pytest.mark.e2e

PROXY_ENV = {"CREDITS_SETTLE_MODE": "journal"}

__all__ = [
    "test_a_failed_upstream_call_releases_the_hold",
    "test_a_tier_without_the_model_gets_403",
    "test_an_account_that_cannot_cover_the_worst_case_gets_402",
]


def test_the_proxy_runs_with_the_journal(proxy: RunningProxy) -> None:
    assert "settle journal" in proxy.log()


def test_a_journaled_call_is_charged_once_and_its_headers_say_so(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "jules", "pro", 1000)

    raw = client(proxy, key).chat.completions.with_raw_response.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}]
    )
    # the figures come from the hold and the price, before the journal is applied
    assert raw.headers["x-credits-charged"] == "0.45"
    assert raw.headers["x-credits-remaining"] == "999.55"
    [event] = wait_for_usage(books, account.id, 1)
    assert event.charged == 450_000 and event.markup_rule == "demo-fast-2x"
    assert wait_until_released(books, account.id) == 0
    assert books.balance(account.id).balance == 1000 * MICRO - 450_000


def test_a_journaled_stream_is_charged_from_its_final_usage(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "kim", "pro", 1000)

    stream = client(proxy, key).chat.completions.create(
        model="demo-fast",
        messages=[{"role": "user", "content": "tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    final = list(stream)[-1].usage
    assert final is not None

    [event] = wait_for_usage(books, account.id, 1)
    cost = litellm_cost("gpt-4o", final.prompt_tokens, final.completion_tokens)
    assert event.stream is True
    assert event.charged == usd_to_micro(cost * 2, USD_PER_CREDIT)
    assert wait_until_released(books, account.id) == 0


def concurrent_calls(api: openai.OpenAI, calls: int, workers: int = 8) -> list[str]:
    """``calls`` small demo-fast calls, ``workers`` at a time; their completion ids."""

    def call(_: int) -> str:
        reply = api.chat.completions.create(
            model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=50
        )
        return reply.id

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(call, range(calls)))


def test_concurrent_calls_of_one_account_are_each_charged_once(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "lee", "pro", 1000)
    assert len(concurrent_calls(client(proxy, key), 40)) == 40
    events = wait_for_usage(books, account.id, 40)
    assert len(events) == 40
    assert len({e.hold_id for e in events}) == 40
    assert wait_until_released(books, account.id) == 0
    assert books.balance(account.id).balance == 1000 * MICRO - 40 * 450_000

"""Cache hits: LiteLLM reports a cost of 0; the operator chooses free or full price."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from ledger import Ledger

from .proxy import RunningProxy
from .test_credit_gate import wait_for_usage

pytestmark = pytest.mark.e2e

PROXY_CONFIG = Path(__file__).with_name("proxy_config_cache.yaml")
PROXY_ENV = {"CREDITS_CACHE_HIT_CHARGE": "full"}
MICRO = 1_000_000


def test_a_cache_hit_is_charged_what_the_call_would_have_cost(proxy: RunningProxy, books: Ledger) -> None:
    account = books.open_account("user", "cached", tier="pro")
    books.grant(account.id, 1000 * MICRO, source="purchase")
    api = openai.OpenAI(
        base_url=f"{proxy.base_url}/v1", api_key=books.issue_key(account.id).plaintext, max_retries=0
    )
    request = {"model": "demo-fast", "messages": [{"role": "user", "content": "cache me"}], "max_tokens": 50}

    api.chat.completions.create(**request)  # type: ignore[call-overload]
    api.chat.completions.create(**request)  # type: ignore[call-overload]

    first, second = sorted(wait_for_usage(books, account.id, 2), key=lambda e: e.id)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.provider_cost_usd == first.provider_cost_usd  # priced as if it had gone upstream
    assert first.charged == second.charged == 450_000
    assert books.balance(account.id).balance == 1000 * MICRO - 900_000

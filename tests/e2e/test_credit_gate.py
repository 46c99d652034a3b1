"""The credit gate through a real LiteLLM proxy, called by the real ``openai`` client."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import litellm
import openai
import pytest

from ledger import Account, Ledger, UsageEvent
from pricing import usd_to_micro

from .proxy import RunningProxy

pytestmark = pytest.mark.e2e

USD_PER_CREDIT = Decimal("0.001")  # examples/pricing.yaml
MICRO = 1_000_000


def open_account(books: Ledger, name: str, tier: str, credits: int) -> tuple[Account, str]:
    account = books.open_account("user", name, tier=tier)
    if credits:
        books.grant(account.id, credits * MICRO, source="purchase", external_ref=f"test-{name}")
    return account, books.issue_key(account.id, user_id=name).plaintext


def client(proxy: RunningProxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key, max_retries=0, timeout=30)


def litellm_cost(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """LiteLLM's own price of this usage, each part read exactly."""
    prompt_cost, completion_cost = litellm.cost_per_token(
        model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )
    return Decimal(str(prompt_cost)) + Decimal(str(completion_cost))


def wait_for_usage(books: Ledger, account_id: int, count: int, timeout: float = 15) -> list[UsageEvent]:
    deadline = time.monotonic() + timeout
    while True:
        events = books.usage(account_id, limit=100)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def wait_until_released(books: Ledger, account_id: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while True:
        held = books.balance(account_id).held
        if held == 0 or time.monotonic() > deadline:
            return held
        time.sleep(0.1)


def test_a_call_is_charged_litellm_cost_times_markup(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "alice", "pro", 1000)

    raw = client(proxy, key).chat.completions.with_raw_response.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}]
    )
    usage = raw.parse().usage
    assert usage is not None

    # demo-fast is gpt-4o behind a mock; rule demo-fast-2x doubles it
    cost = litellm_cost("gpt-4o", usage.prompt_tokens, usage.completion_tokens)
    assert cost == Decimal("0.000225")  # 10 x $2.50/1M + 20 x $10/1M
    expected = usd_to_micro(cost * 2, USD_PER_CREDIT)
    assert expected == 450_000  # 0.45 credits

    [event] = books.usage(account.id)  # on disk before the response reached us
    assert event.charged == expected
    assert event.provider_cost_usd == cost
    assert event.markup_rule == "demo-fast-2x"
    assert (event.tokens_in, event.tokens_out, event.call_type, event.stream) == (10, 20, "completion", False)
    balance = books.balance(account.id)
    assert (balance.balance, balance.held) == (1000 * MICRO - expected, 0)
    assert raw.headers["x-credits-charged"] == "0.45"
    assert raw.headers["x-credits-remaining"] == "999.55"


def test_a_stream_is_charged_from_its_final_usage(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "bob", "pro", 1000)

    raw = client(proxy, key).chat.completions.with_raw_response.create(
        model="demo-fast",
        messages=[{"role": "user", "content": "tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert "x-credits-remaining" in raw.headers
    chunks = list(raw.parse())
    final = chunks[-1].usage
    assert final is not None and final.completion_tokens > 0

    [event] = books.usage(account.id)  # on disk before the stream ended at the client
    cost = litellm_cost("gpt-4o", final.prompt_tokens, final.completion_tokens)
    assert event.stream is True
    assert (event.tokens_in, event.tokens_out) == (final.prompt_tokens, final.completion_tokens)
    assert event.charged == usd_to_micro(cost * 2, USD_PER_CREDIT)
    balance = books.balance(account.id)
    assert (balance.balance, balance.held) == (1000 * MICRO - event.charged, 0)


def test_a_tier_without_the_model_gets_403(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "carol", "free", 1000)

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(proxy, key).chat.completions.create(
            model="demo-premium", messages=[{"role": "user", "content": "hi"}]
        )

    assert caught.value.status_code == 403
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "model_not_allowed"
    assert "demo-premium" in body["message"] and "free" in body["message"]
    assert books.usage(account.id) == []
    assert books.balance(account.id).balance == 1000 * MICRO


def test_an_account_that_cannot_cover_the_worst_case_gets_402(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "dave", "pro", 1)  # 1 credit = $0.001

    with pytest.raises(openai.APIStatusError) as caught:
        # worst case: 4096 output tokens x $10/1M x 2 = $0.08 = 80 credits
        client(proxy, key).chat.completions.create(
            model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=4096
        )

    assert caught.value.status_code == 402
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "insufficient_quota"
    assert "credits" in body["message"]
    balance = books.balance(account.id)
    assert (balance.balance, balance.held) == (1 * MICRO, 0)
    assert books.usage(account.id) == []


def test_a_small_enough_call_fits_the_same_small_balance(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "erin", "pro", 1)

    # worst case with max_tokens=20: (prompt ~9 x $2.5/1M + 20 x $10/1M) x 2 ≈ 0.45 credits
    client(proxy, key).chat.completions.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )

    [event] = books.usage(account.id)
    assert event.charged == 450_000
    assert books.balance(account.id).available == 1 * MICRO - 450_000


def test_a_failed_upstream_call_releases_the_hold(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "frank", "pro", 1000)

    with pytest.raises(openai.APIStatusError):
        client(proxy, key).chat.completions.create(
            model="demo-broken", messages=[{"role": "user", "content": "hi"}]
        )

    assert wait_until_released(books, account.id) == 0
    assert books.balance(account.id).balance == 1000 * MICRO
    assert books.usage(account.id) == []
    kinds = [entry.kind for entry in books.history(account.id)]
    assert kinds.count("hold") == 1 and kinds.count("release") == 1 and "charge" not in kinds


def test_embeddings_go_through_the_same_gate(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "grace", "pro", 1000)

    result = client(proxy, key).embeddings.create(model="demo-embed", input="hello world")

    [event] = books.usage(account.id)
    assert event.call_type == "embedding"
    assert event.tokens_in == result.usage.prompt_tokens
    # pro tier default: x1.2 of LiteLLM's embedding cost
    cost = litellm_cost("text-embedding-3-small", result.usage.prompt_tokens, 0)
    assert event.charged == usd_to_micro(cost * Decimal("1.2"), USD_PER_CREDIT)


def test_an_unknown_key_is_refused(proxy: RunningProxy) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(proxy, "sk-cr-not-a-real-key").chat.completions.create(
            model="demo-fast", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_client_cannot_choose_the_hold_to_charge_or_void(proxy: RunningProxy, books: Ledger) -> None:
    victim = books.open_account("user", "heidi", tier="pro")
    books.grant(victim.id, 10 * MICRO, source="purchase")
    victim_hold = books.hold(victim.id, 2 * MICRO, ttl_seconds=600)
    _, key = open_account(books, "mallory", "free", 1000)

    with pytest.raises(openai.PermissionDeniedError):
        client(proxy, key).chat.completions.create(
            model="demo-premium",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"metadata": {"credits_hold_id": victim_hold.id}},
        )
    time.sleep(1)  # the failure event runs after the response

    assert books.get_hold(victim_hold.id).status == "open"
    books.void(victim_hold.id, "test cleanup")


def test_balance_and_usage_routes_show_the_callers_own_account(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "ivan", "pro", 500)
    client(proxy, key).chat.completions.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}]
    )
    headers = {"Authorization": f"Bearer {key}"}

    balance = httpx.get(f"{proxy.base_url}/credits/balance", headers=headers).json()
    usage = httpx.get(f"{proxy.base_url}/credits/usage", headers=headers).json()

    assert balance["account"] == account.label == "user:ivan"
    assert Decimal(balance["available_credits"]) == Decimal(500) - Decimal("0.45")
    assert [row["charged_credits"] for row in usage["data"]] == ["0.45"]
    assert httpx.get(f"{proxy.base_url}/credits/balance").status_code == 401


def test_text_completions_responses_and_images_go_through_the_same_gate(
    proxy: RunningProxy, books: Ledger
) -> None:
    account, key = open_account(books, "judy", "enterprise", 1000)  # enterprise: passthrough
    api = client(proxy, key)

    text = api.completions.create(model="demo-instruct", prompt="Say hi", max_tokens=20)
    api.responses.create(model="demo-fast", input="Say hi", max_output_tokens=100)
    api.images.generate(model="demo-image", prompt="a cat", n=1)

    events = {e.call_type: e for e in wait_for_usage(books, account.id, 3)}
    assert set(events) == {"text_completion", "responses", "image_generation"}
    assert text.usage is not None
    instruct_cost = litellm_cost(
        "gpt-3.5-turbo-instruct", text.usage.prompt_tokens, text.usage.completion_tokens
    )
    assert events["text_completion"].charged == usd_to_micro(instruct_cost, USD_PER_CREDIT)
    assert events["responses"].tokens_out > 0 and events["responses"].charged > 0
    assert events["image_generation"].model == "demo-image"
    balance = books.balance(account.id)
    assert balance.held == 0
    assert balance.balance == 1000 * MICRO - sum(e.charged for e in events.values())


def test_prices_list_the_callers_models_after_markup(proxy: RunningProxy, books: Ledger) -> None:
    _, pro_key = open_account(books, "kate", "pro", 10)
    _, free_key = open_account(books, "liam", "free", 10)

    def prices(key: str) -> dict[str, dict[str, str]]:
        body = httpx.get(
            f"{proxy.base_url}/credits/prices", headers={"Authorization": f"Bearer {key}"}
        ).json()
        return {row["model"]: row for row in body["models"]}

    pro, free = prices(pro_key), prices(free_key)
    free_quotas = httpx.get(
        f"{proxy.base_url}/credits/prices", headers={"Authorization": f"Bearer {free_key}"}
    ).json()["quotas"]
    # examples/pricing.yaml: free has demo-fast 100 a day and 1000 calls a month
    assert {(q["limit"], q["used"], q["left"]) for q in free_quotas} == {(100, 0, 100), (1000, 0, 1000)}
    # gpt-4o rates x2 (rule demo-fast-2x): $5 and $20 per 1M tokens = 5000 and 20000 credits
    assert (pro["demo-fast"]["input_credits_per_1m"], pro["demo-fast"]["output_credits_per_1m"]) == (
        "5000",
        "20000",
    )
    assert pro["demo-fast"]["rule"] == "demo-fast-2x"
    assert "demo-premium" in pro and "demo-premium" not in free
    assert set(free) <= {name for name in pro if name.startswith("demo-")}


def test_the_free_tier_clamps_max_tokens(proxy: RunningProxy, books: Ledger) -> None:
    account, key = open_account(books, "mia", "free", 1000)

    client(proxy, key).chat.completions.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
    )

    hold = next(e for e in books.history(account.id) if e.kind == "hold")
    # clamped to the tier's 1024 tokens: 1024 x $10/1M x 2 = $0.02048 plus the prompt
    assert 20_480_000 < hold.held_delta < 21_000_000

"""The hooks with LiteLLM's own keys: only the ``UserAPIKeyAuth`` LiteLLM builds, no custom_auth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from credit_hooks import credits_callback, runtime
from ledger import Ledger

from .gate_harness import runtime_books


@pytest.fixture
def books(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    book = runtime_books(tmp_path, monkeypatch, CREDITS_DEFAULT_TIER="pro", CREDITS_WELCOME_CREDITS="500")
    yield book
    runtime.reset()
    assert book.audit() == []
    book.dispose()


def litellm_key(**ids: Any) -> UserAPIKeyAuth:
    """What LiteLLM's own auth builds for a virtual key (hash, ids; no metadata of ours)."""
    return UserAPIKeyAuth(api_key="88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b", **ids)


def request() -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "metadata": {"user_api_key_hash": "88dc28d0"},
    }


def test_a_team_key_provisions_the_team_account_and_holds(books: Ledger) -> None:
    data = request()

    asyncio.run(
        credits_callback.async_pre_call_hook(
            litellm_key(team_id="acme", user_id="u1"), None, data, "acompletion"
        )
    )

    account = books.find_account("team", "acme")
    assert account is not None and account.tier == "pro"
    hold_id = data["metadata"]["credits_hold_id"]
    hold = books.get_hold(hold_id)
    assert (hold.account_id, hold.status) == (account.id, "open")
    # 100 output tokens x $10/1M + a few prompt tokens, x1.5 (rule gpt4o-min), at least $0.01
    assert hold.amount == 10_000_000
    assert books.balance(account.id).available == 500_000_000 - hold.amount

    event = {"litellm_params": {"metadata": data["metadata"]}}
    asyncio.run(credits_callback.async_log_failure_event(event, None, None, None))
    assert books.get_hold(hold_id).status == "voided"
    assert books.balance(account.id).available == 500_000_000


def test_without_a_team_the_user_pays(books: Ledger) -> None:
    asyncio.run(
        credits_callback.async_pre_call_hook(litellm_key(user_id="u2"), None, request(), "acompletion")
    )
    assert books.find_account("user", "u2") is not None
    assert books.find_account("team", "acme") is None


def test_unknown_accounts_can_be_refused(books: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITS_UNKNOWN_ACCOUNTS", "refuse")
    runtime.reset()

    with pytest.raises(ProxyException) as caught:
        asyncio.run(
            credits_callback.async_pre_call_hook(litellm_key(user_id="u3"), None, request(), "acompletion")
        )

    assert (caught.value.code, caught.value.type) == ("403", "unknown_account")
    assert books.find_account("user", "u3") is None


@pytest.mark.parametrize("end_user", ["a\x00b", "a\ud800b"])
def test_an_end_user_id_no_database_stores_is_a_400_naming_user(
    books: Ledger, monkeypatch: pytest.MonkeyPatch, end_user: str
) -> None:
    # LiteLLM's own keys take the end user from the body's ``user``: the client's text
    monkeypatch.setenv("CREDITS_ACCOUNT_ORDER", "end_user,user")
    runtime.reset()
    data = request()

    with pytest.raises(ProxyException) as caught:
        asyncio.run(
            credits_callback.async_pre_call_hook(
                litellm_key(user_id="u9", end_user_id=end_user), None, data, "acompletion"
            )
        )

    assert (caught.value.code, caught.value.type, caught.value.param) == (
        "400",
        "invalid_request_error",
        None,
    )
    assert "user: holds a NUL character or invalid Unicode" in caught.value.message
    assert "credits_hold_id" not in data["metadata"]
    assert books.find_account("user", "u9") is None


def test_the_master_key_is_not_billed(books: Ledger) -> None:
    from litellm.proxy._types import LitellmUserRoles

    data = request()
    admin = UserAPIKeyAuth(api_key="hash", user_role=LitellmUserRoles.PROXY_ADMIN)
    asyncio.run(credits_callback.async_pre_call_hook(admin, None, data, "acompletion"))
    assert "credits_hold_id" not in data["metadata"]


def test_guessed_keys_cannot_grow_the_key_cache_without_bound(
    books: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from credit_hooks import auth

    monkeypatch.setattr(auth, "_KEY_CACHE_SIZE", 50)
    auth._keys.clear()

    async def guess() -> None:
        for i in range(120):
            assert await auth._find_key(f"sk-cr-guess-{i}") is None

    asyncio.run(guess())
    assert len(auth._keys) == 50

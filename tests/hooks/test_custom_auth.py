"""``custom_auth``: keys issued by the ledger, one validated object per key, a copy per request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from credit_hooks import auth, runtime
from credit_hooks.identity import BOUND_ACCOUNT_KEY
from ledger import Ledger

from .gate_harness import runtime_books


@pytest.fixture
def books(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    book = runtime_books(tmp_path, monkeypatch)
    auth._keys.clear()
    yield book
    runtime.reset()
    auth._keys.clear()
    book.dispose()


def authenticate(plaintext: str) -> UserAPIKeyAuth:
    return asyncio.run(auth.user_api_key_auth(None, plaintext))  # type: ignore[arg-type]


def test_each_request_gets_its_own_object_and_containers(books: Ledger) -> None:
    account = books.open_account("user", "ana", tier="free")
    plaintext = books.issue_key(account.id, user_id="ana", alias="laptop").plaintext
    first = authenticate(plaintext)
    assert first.user_id == "ana" and first.key_alias == "laptop"
    assert first.metadata[BOUND_ACCOUNT_KEY] == account.id
    # what LiteLLM does to the object of one request ...
    first.metadata["spend_logs_note"] = "first request"
    first.models.append("gpt-4o")
    first.user_id = "someone-else"
    second = authenticate(plaintext)
    # ... is not seen by the next one, though both come from one cached lookup
    assert len(auth._keys) == 1
    assert second is not first and second.metadata is not first.metadata
    assert "spend_logs_note" not in second.metadata and second.models == []
    assert second.user_id == "ana" and second.metadata[BOUND_ACCOUNT_KEY] == account.id


def test_unknown_and_revoked_keys_are_refused(books: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    account = books.open_account("user", "bo", tier="free")
    issued = books.issue_key(account.id, user_id="bo", alias="ci")
    with pytest.raises(ProxyException) as refused:
        authenticate("sk-cr-not-a-key")
    assert refused.value.code == "401"
    assert authenticate(issued.plaintext).user_id == "bo"
    books.revoke_key(issued.key.id)
    monkeypatch.setattr(auth, "_KEY_CACHE_SECONDS", 0.0)
    auth._keys.clear()  # the cache's 10 s, passed
    with pytest.raises(ProxyException, match="unknown or revoked key"):
        authenticate(issued.plaintext)

"""A client that walks away mid-stream: charged once for what was delivered, the hold resolved."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from e2e.proxy import start_proxy
from ledger import Ledger

from .support import fault_catalog, proxy_env, slow_upstream, wait_for, write_config

pytestmark = pytest.mark.e2e

MICRO = 1_000_000


@pytest.mark.timeout(120)
def test_a_stream_cut_by_the_client_is_charged_once_for_what_was_delivered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    books = Ledger(url)
    books.create_schema()
    account = books.open_account("user", "walker", tier="pro")
    books.grant(account.id, 100 * MICRO, source="purchase", external_ref="walker")
    key = books.issue_key(account.id, user_id="walker").plaintext

    with slow_upstream() as port:
        proxy = start_proxy(
            tmp_path, proxy_env(url, fault_catalog(tmp_path)), config=write_config(tmp_path, port)
        )
        try:
            body = {
                "model": "demo-slow",
                "messages": [{"role": "user", "content": "a long story"}],
                "stream": True,
                "max_tokens": 64,
            }
            received = 0
            with (
                httpx.Client(timeout=30) as client,
                client.stream(
                    "POST",
                    f"{proxy.base_url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                ) as response,
            ):
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        received += 1
                    if received == 3:
                        break  # leaving the block closes the connection mid-stream
            assert received == 3

            assert wait_for(lambda: books.balance(account.id).held == 0, 30), "the hold was never resolved"
            events = books.usage(account.id)
        finally:
            proxy.stop()

    assert len(events) <= 1
    if events:  # LiteLLM reported what the provider delivered before the client left
        assert events[0].stream and events[0].tokens_out < 12
    balance = books.balance(account.id)
    assert balance.balance == 100 * MICRO - sum(e.charged for e in events)
    assert books.audit() == []
    print(f"\nclient left after 3 chunks: {[(e.tokens_out, e.charged) for e in events] or 'not charged'}")
    books.dispose()

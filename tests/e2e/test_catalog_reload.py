"""Editing the pricing file under a running proxy: good edits apply, bad ones are refused."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from ledger import Ledger

from .proxy import RunningProxy

pytestmark = pytest.mark.e2e

MICRO = 1_000_000


def call_and_charge(proxy: RunningProxy, key: str, books: Ledger, account_id: int) -> tuple[int, str | None]:
    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key, max_retries=0)
    client.chat.completions.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=50
    )
    latest = books.usage(account_id, limit=1)[0]
    return latest.charged, latest.catalog_version


def wait_for_log(proxy: RunningProxy, text: str, timeout: float = 10, after: int = 0) -> str:
    """The proxy log from offset ``after`` on, once ``text`` appears in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proxy.log()[after:]
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in the proxy log:\n{proxy.log()[-3000:]}")


def test_edits_to_the_pricing_file_apply_and_bad_ones_are_refused(
    proxy: RunningProxy, books: Ledger, workdir: Path
) -> None:
    account = books.open_account("user", "reload", tier="pro")
    books.grant(account.id, 1000 * MICRO, source="purchase")
    key = books.issue_key(account.id).plaintext
    catalog = workdir / "pricing.yaml"
    original = catalog.read_text()

    charged, first_version = call_and_charge(proxy, key, books, account.id)
    assert charged == 450_000  # $0.000225 x 2

    # a typo in a markup kind: refused, the running catalog stays in force
    broken = original.replace(
        '    kind: multiplier\n    value: "2.0"', '    kind: multiplyer\n    value: "2.0"'
    )
    assert broken != original
    catalog.write_text(broken)
    log = wait_for_log(proxy, "pricing catalog edit refused")
    assert "pricing.yaml" in log and "rules[0].kind" in log and "multiplyer" in log
    charged, version = call_and_charge(proxy, key, books, account.id)
    assert (charged, version) == (450_000, first_version)

    # a valid edit: the next call is priced by the new rule
    catalog.write_text(
        original.replace('    kind: multiplier\n    value: "2.0"', '    kind: multiplier\n    value: "3.0"')
    )
    wait_for_log(proxy, "pricing catalog reloaded")
    charged, version = call_and_charge(proxy, key, books, account.id)
    assert charged == 675_000  # $0.000225 x 3
    assert version != first_version


def test_database_rows_edit_the_catalog_under_a_running_proxy(proxy: RunningProxy, books: Ledger) -> None:
    account = books.open_account("user", "rows", tier="pro")
    books.grant(account.id, 1000 * MICRO, source="purchase")
    key = books.issue_key(account.id).plaintext
    before, _ = call_and_charge(proxy, key, books, account.id)

    mark = len(proxy.log())
    books.upsert_pricing_rule_row(
        "db-demo-fast-4x",
        data={"model": "demo-fast", "kind": "multiplier", "value": "4"},
        priority=10,
        updated_by="test",
    )
    wait_for_log(proxy, "pricing catalog reloaded", after=mark)
    charged, _ = call_and_charge(proxy, key, books, account.id)
    assert charged == 900_000 != before  # $0.000225 x 4
    assert books.usage(account.id, limit=1)[0].markup_rule == "db-demo-fast-4x"

    # a row written past the CLI's validation: refused by the proxy, the x4 rule stays
    books.upsert_pricing_rule_row(
        "db-broken", data={"model": "demo-*", "kind": "multiplier", "value": "-1"}, updated_by="test"
    )
    log = wait_for_log(proxy, "pricing_rules[id=db-broken]", after=mark)
    assert "database" in log
    charged, _ = call_and_charge(proxy, key, books, account.id)
    assert charged == 900_000


def test_a_used_up_quota_answers_429_with_retry_after(proxy: RunningProxy, books: Ledger) -> None:
    books.delete_pricing_rule_row("db-broken", updated_by="test")
    account = books.open_account("user", "quota", tier="free")
    books.grant(account.id, 1000 * MICRO, source="purchase")
    key = books.issue_key(account.id).plaintext
    mark = len(proxy.log())
    books.upsert_tier_row(
        "free", name="Free", data={"quotas": [{"model": "demo-fast", "per_day": 1}]}, updated_by="test"
    )
    wait_for_log(proxy, "pricing catalog reloaded", after=mark)
    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key, max_retries=0)
    client.chat.completions.create(
        model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )

    response = caught.value.response
    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= 86400
    body = response.json()["error"]
    assert body["type"] == "quota_exceeded" and "resets at" in body["message"]
    assert books.balance(account.id).held == 0

"""Malformed input at every entry point: a clear error, and the ledger unchanged.

Entry points: the pricing catalog file, the ``credits-admin`` command line, the
``/credits/*`` route parameters and the metadata / body of an LLM request. (There is
no webhook route yet, so webhook bodies are not covered here.) Each case counts
towards the tally printed at the end of the run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from ledger import Ledger
from pricing import load_catalog
from pricing.errors import CatalogError

from .conftest import MALFORMED_CASES
from .support import (
    EXAMPLE_CATALOG,
    MICRO,
    REPO,
    RunningProxy,
    fault_catalog,
    proxy_env,
    snapshot,
    start_proxy,
    write_config,
)

pytestmark = pytest.mark.e2e


def tried(entry_point: str) -> None:
    MALFORMED_CASES[entry_point] = MALFORMED_CASES.get(entry_point, 0) + 1


# -- pricing catalog files ------------------------------------------------------------

BAD_EXAMPLES = sorted((REPO / "examples" / "bad").glob("*.yaml"))
GENERATED = {
    "empty.yaml": "",
    "a_list.yaml": "- 1\n- 2\n",
    "a_scalar.yaml": "just words\n",
    "negative_usd_per_credit.yaml": 'usd_per_credit: "-0.001"\ntiers: [{code: free, name: Free}]\n',
    "nan_usd_per_credit.yaml": 'usd_per_credit: "NaN"\ntiers: [{code: free, name: Free}]\n',
    "text_usd_per_credit.yaml": 'usd_per_credit: "lots"\ntiers: [{code: free, name: Free}]\n',
    "tiers_not_list.yaml": 'usd_per_credit: "0.001"\ntiers: {code: free}\n',
    "tier_without_code.yaml": 'usd_per_credit: "0.001"\ntiers: [{name: Free}]\n',
    "rules_not_list.yaml": 'usd_per_credit: "0.001"\ntiers: [{code: free, name: Free}]\nrules: 7\n',
    "rule_huge_multiplier.yaml": (
        'usd_per_credit: "0.001"\ntiers: [{code: free, name: Free}]\n'
        'rules: [{id: r, model: "*", kind: multiplier, value: "1e999999"}]\n'
    ),
    "anchors_bomb.yaml": 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
    'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nusd_per_credit: "0.001"\ntiers: [{code: free, name: Free}]\n',
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", BAD_EXAMPLES, ids=[p.name for p in BAD_EXAMPLES])
def test_a_bad_example_catalog_is_refused_naming_the_file(path: Path) -> None:
    tried("pricing YAML")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert path.name in str(caught.value)
    assert caught.value.reason


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_a_generated_bad_catalog_is_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    tried("pricing YAML")
    path = tmp_path / name
    path.write_text(GENERATED[name])
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert name in str(caught.value) and caught.value.reason


@pytest.mark.timeout(60)
def test_a_catalog_with_a_nul_byte_is_refused_as_a_catalog_error(tmp_path: Path) -> None:
    tried("pricing YAML")
    path = tmp_path / "binary.yaml"
    path.write_text("\x00\x01\x02 usd_per_credit: 1")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert "binary.yaml" in str(caught.value)


# -- the admin command line -------------------------------------------------------------

CLI = Path(sys.executable).with_name("credits-admin")

# (arguments, a word the error must contain)
CLI_CASES: list[tuple[list[str], str]] = [
    (["grant", "user:nobody", "10"], "user:nobody"),
    (["grant", "999999", "10"], "999999"),
    (["grant", "badref", "10"], "KIND:ID"),
    (["grant", "robot:alice", "10"], "KIND:ID"),
    (["grant", "user:alice", "-5"], "-5"),
    (["grant", "user:alice", "--", "-5"], "CREDITS"),
    (["grant", "user:alice", "abc"], "CREDITS"),
    (["grant", "user:alice", "0"], "CREDITS"),
    (["grant", "user:alice", "NaN"], "CREDITS"),
    (["grant", "user:alice", "Infinity"], "CREDITS"),
    (["grant", "user:alice", "0.0000001"], "CREDITS"),
    (["grant", "user:alice", ""], "CREDITS"),
    (["grant", "user:alice", "10", "--expires-days", "0"], "--expires-days"),
    (["grant", "user:alice", "10", "--priority", "high"], "--priority"),
    (["account", "create", "user:bob", "--tier", "gold"], "--tier"),
    (["account", "create", "bob"], "KIND:ID"),
    (["account", "create", "user:"], "KIND:ID"),
    (["account", "create", "user:bob", "--overdraft", "abc"], "--overdraft"),
    (["account", "create", "user:bob", "--overdraft=-1"], "--overdraft"),
    (["account", "create", "user:bob", "--overdraft=NaN"], "--overdraft"),
    (["account", "show", "user:nobody"], "user:nobody"),
    (["account", "show", "team"], "KIND:ID"),
    (["usage", "user:alice", "--limit", "0"], "--limit"),
    (["usage", "user:alice", "--limit", "5000"], "--limit"),
    (["usage", "user:alice", "--limit", "abc"], "--limit"),
    (["key", "issue", "nosuch:1"], "KIND:ID"),
    (["key", "issue", "user:nobody"], "user:nobody"),
]
HUGE_GRANT = (["grant", "user:alice", "1e30"], "CREDITS")


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'credits.db'}"
    books = Ledger(url)
    books.create_schema()
    alice = books.open_account("user", "alice", tier="pro")
    books.grant(alice.id, 50 * MICRO, source="purchase", external_ref="alice")
    books.dispose()
    yield url


def run_cli(url: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CREDITS_DATABASE_URL": url,
        "CREDITS_PRICING_FILE": str(EXAMPLE_CATALOG),
        "COLUMNS": "250",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=60)


def check_cli_refuses(url: str, args: list[str], word: str) -> None:
    tried("CLI arguments")
    before = snapshot(url)
    result = run_cli(url, args)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{args} succeeded:\n{output}"
    assert "Traceback" not in output, f"{args} crashed instead of explaining:\n{output[-1500:]}"
    assert word in output, f"{args}: the error does not name {word!r}:\n{output}"
    assert snapshot(url) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("args", "word"), CLI_CASES, ids=[" ".join(a) or "-" for a, _ in CLI_CASES])
def test_the_cli_refuses_bad_arguments_naming_them(cli_db: str, args: list[str], word: str) -> None:
    check_cli_refuses(cli_db, args, word)


@pytest.mark.timeout(120)
def test_the_cli_refuses_a_grant_too_large_to_store(cli_db: str) -> None:
    check_cli_refuses(cli_db, *HUGE_GRANT)


# -- a proxy on PostgreSQL: route parameters and request bodies --------------------------


@pytest.fixture(scope="module")
def pg_module_url(pg_admin: Engine | str) -> Iterator[str]:
    from conftest import PG_ADMIN_URL, service_missing

    if isinstance(pg_admin, str):
        service_missing("PostgreSQL", pg_admin)
    assert not isinstance(pg_admin, str)
    name = f"credits_faults_{secrets.token_hex(4)}"
    with pg_admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def world(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("malformed")
    books = Ledger(pg_module_url)
    books.create_schema()
    caller = books.open_account("user", "caller", tier="pro")
    books.grant(caller.id, 1000 * MICRO, source="purchase", external_ref="caller")
    victim = books.open_account("user", "victim", tier="pro")
    books.grant(victim.id, 1000 * MICRO, source="purchase", external_ref="victim")
    victim_hold = books.hold(victim.id, 2 * MICRO, ttl_seconds=3600, reference="victim's own call")
    key = books.issue_key(caller.id, user_id="caller").plaintext
    proxy = start_proxy(
        workdir, proxy_env(pg_module_url, fault_catalog(workdir)), config=write_config(workdir)
    )
    try:
        yield {
            "url": pg_module_url,
            "books": books,
            "proxy": proxy,
            "key": key,
            "caller": caller,
            "victim": victim,
            "victim_hold": victim_hold,
        }
        assert books.audit() == []
    finally:
        proxy.stop()
        books.dispose()


def money(url: str) -> dict[str, Any]:
    """What a refused request must not change: balances, grants, charges, open holds."""
    s = snapshot(url)
    return {
        "money": s["money"],
        "grants": s["grants"],
        "usage_events": s["counts"]["usage_events"],
        "charged_holds": [h for h in s["holds"] if h[2] is not None],
        "open_holds": [h for h in s["holds"] if h[1] == "open"],
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("limit", ["-1", "0", "abc", "100000", "1.5", "", "1e3", "%00"])
def test_a_bad_usage_limit_is_a_422_naming_limit(world: dict[str, Any], limit: str) -> None:
    tried("route parameters")
    proxy: RunningProxy = world["proxy"]
    before = snapshot(world["url"])
    response = httpx.get(
        f"{proxy.base_url}/credits/usage?limit={limit}",
        headers={"authorization": f"Bearer {world['key']}"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "limit" in response.text
    assert snapshot(world["url"]) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", ["/credits/usage?limit=5", "/credits/balance"])
@pytest.mark.parametrize("key", ["", "sk-cr-not-a-key", "x" * 10_000])
def test_a_credits_route_without_a_valid_key_is_a_401(world: dict[str, Any], path: str, key: str) -> None:
    tried("route parameters")
    before = snapshot(world["url"])
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{world['proxy'].base_url}{path}", headers=headers, timeout=30)
    assert response.status_code in (400, 401), response.text
    assert snapshot(world["url"]) == before


MESSAGES = [{"role": "user", "content": "hi"}]
# request bodies LiteLLM or the plugin must refuse: (body, status, a word the message names)
REFUSED: dict[str, tuple[dict[str, Any], int, str]] = {
    "model not a string": ({"model": 5, "messages": MESSAGES}, 400, "model"),
    "model null": ({"model": None, "messages": MESSAGES}, 400, "model"),
    "unknown model": ({"model": "no-such-model", "messages": MESSAGES, "max_tokens": 20}, 400, "model"),
    "no messages": ({"model": "demo-fast", "max_tokens": 20}, 400, "messages"),
    "n too large to afford": (
        {"model": "demo-fast", "messages": MESSAGES, "max_tokens": 20, "n": 10**9},
        402,
        "credits",
    ),
}


def post(world: dict[str, Any], body: dict[str, Any] | bytes) -> httpx.Response:
    headers = {"authorization": f"Bearer {world['key']}", "content-type": "application/json"}
    url = f"{world['proxy'].base_url}/v1/chat/completions"
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers=headers, timeout=60)
    return httpx.post(url, json=body, headers=headers, timeout=60)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_malformed_request_is_refused_and_costs_nothing(world: dict[str, Any], case: str) -> None:
    tried("request body/metadata")
    body, status, word = REFUSED[case]
    before = money(world["url"])
    response = post(world, body)
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert word in str(error["message"]).lower() or word == error.get("param"), error
    assert money(world["url"]) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b'"a string"', b"null"])
def test_a_body_that_is_not_a_json_object_is_refused(world: dict[str, Any], raw: bytes) -> None:
    tried("request body/metadata")
    before = snapshot(world["url"])
    response = post(world, raw)
    # LiteLLM's own auth step answers a JSON array/string/null body with a bare 500
    # ('list' object has no attribute 'get') before the plugin runs: refused, but not clearly
    assert 400 <= response.status_code <= 500, response.text[:500]
    if raw == b"{not json":
        assert response.status_code == 400 and "JSON" in response.text
    assert snapshot(world["url"]) == before


@pytest.mark.timeout(120)
def test_a_model_name_too_long_for_the_ledger_is_a_clear_400(world: dict[str, Any]) -> None:
    tried("request body/metadata")
    before = money(world["url"])
    response = post(world, {"model": "m" * 300, "messages": MESSAGES, "max_tokens": 20})
    assert money(world["url"]) == before
    assert response.status_code == 400, response.text[:300]
    assert "SQL" not in response.text


@pytest.mark.timeout(120)
def test_an_unknown_model_writes_nothing_to_the_ledger(world: dict[str, Any]) -> None:
    tried("request body/metadata")
    before = snapshot(world["url"])["counts"]
    response = post(world, {"model": "no-such-model-either", "messages": MESSAGES})
    assert response.status_code == 400
    assert snapshot(world["url"])["counts"] == before


# metadata the client controls: the plugin must ignore its own keys in it and never fail on its shape
TOLERATED: dict[str, Any] = {
    "metadata is a string": "nope",
    "metadata is a list": [1, 2],
    "metadata is a number": 5,
    "metadata names another account's hold": "VICTIM_HOLD",
    "metadata names another account": "VICTIM_ACCOUNT",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(TOLERATED))
def test_client_metadata_never_moves_another_accounts_money(world: dict[str, Any], case: str) -> None:
    tried("request body/metadata")
    books: Ledger = world["books"]
    meta = TOLERATED[case]
    if meta == "VICTIM_HOLD":
        meta = {"credits_hold_id": world["victim_hold"].id, "credits_account_id": world["victim"].id}
    elif meta == "VICTIM_ACCOUNT":
        meta = {"credits_account_id": world["victim"].id, "credits_call_type": "embedding"}
    victim_before = (books.balance(world["victim"].id), books.get_hold(world["victim_hold"].id))
    caller_events = len(books.usage(world["caller"].id, limit=1000))
    response = post(world, {"model": "demo-fast", "messages": MESSAGES, "max_tokens": 20, "metadata": meta})
    # served like any other call and charged to the caller, once
    assert response.status_code == 200, response.text[:500]
    assert len(books.usage(world["caller"].id, limit=1000)) == caller_events + 1
    assert books.balance(world["caller"].id).held == 0
    assert (books.balance(world["victim"].id), books.get_hold(world["victim_hold"].id)) == victim_before

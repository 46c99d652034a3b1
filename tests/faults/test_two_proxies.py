"""Two proxy processes on one PostgreSQL ledger race for the last credits of one account.

The account can afford exactly 100 worst-case holds (a flat one-cent price makes the
hold and the charge the same amount). 500 calls, 50 at a time, split across both
proxies: at most 100 are served, the balance never goes below the overdraft limit
(zero), no hold is charged twice, and the books balance.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ledger import Ledger

from .support import (
    FLAT_CATALOG,
    MICRO,
    CallResult,
    RunningProxy,
    chat,
    granted,
    http_client,
    open_holds,
    proxy_env,
    run_bounded,
    start_proxy,
    write_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CALLS = 500
WORKERS = 50
AFFORDABLE = 100
BODY = {"max_tokens": 20}


@pytest.mark.timeout(240)
def test_two_proxies_cannot_spend_more_than_the_account_has(pg_url: str, tmp_path: Path) -> None:
    books = Ledger(pg_url)
    books.create_schema()
    catalog = tmp_path / "pricing.yaml"
    catalog.write_text(FLAT_CATALOG)
    config = write_config(tmp_path)
    workdirs = [tmp_path / "a", tmp_path / "b"]
    for w in workdirs:
        w.mkdir()
    env = proxy_env(pg_url, catalog, CREDITS_HOLD_TTL_SECONDS="60")
    with ThreadPoolExecutor(2) as pool:
        proxies: list[RunningProxy] = list(pool.map(lambda w: start_proxy(w, env, config=config), workdirs))
    try:
        # the worst-case hold of this exact request, read from the ledger after one probe call
        probe = books.open_account("user", "probe", tier="pro")
        books.grant(probe.id, 1000 * MICRO, source="purchase", external_ref="probe")
        probe_key = books.issue_key(probe.id, user_id="probe").plaintext
        with http_client(1) as client:
            first = chat(client, proxies[0].base_url, probe_key, 0, body=BODY)
        assert first.complete, first
        [hold_entry] = [e for e in books.history(probe.id) if e.kind == "hold"]
        hold = hold_entry.held_delta
        [event] = books.usage(probe.id)
        assert hold > 0 and event.charged == hold, (hold, event.charged)

        account = books.open_account("user", "race", tier="pro")
        grant = AFFORDABLE * hold
        books.grant(account.id, grant, source="purchase", external_ref="race")
        key = books.issue_key(account.id, user_id="race").plaintext

        lowest = {"balance": grant, "available": grant}
        stop = threading.Event()

        def sample() -> None:
            watcher = Ledger(pg_url)
            try:
                while not stop.is_set():
                    b = watcher.balance(account.id)
                    lowest["balance"] = min(lowest["balance"], b.balance)
                    lowest["available"] = min(lowest["available"], b.available)
                    time.sleep(0.02)
            finally:
                watcher.dispose()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with http_client(WORKERS // 2) as a, http_client(WORKERS // 2) as b:
            clients = [(a, proxies[0].base_url), (b, proxies[1].base_url)]

            def job(i: int) -> CallResult:
                client, base = clients[i % 2]
                return chat(client, base, key, i, body=BODY)

            started = time.monotonic()
            results = run_bounded([lambda i=i: job(i) for i in range(CALLS)], WORKERS, 150)
            elapsed = time.monotonic() - started
        stop.set()
        sampler.join(timeout=10)

        outcomes = Counter(f"{r.status}/{r.error_type}" for r in results)
        served = [r for r in results if r.status == 200 and r.complete]
        per_proxy = Counter(r.index % 2 for r in served)
        print(
            f"\ntwo proxies, {len(results)} calls in {elapsed:.1f}s: {dict(outcomes)}; served by proxy: "
            f"{dict(per_proxy)}; lowest balance {lowest['balance']}, lowest available {lowest['available']}"
        )
        assert len(results) == CALLS
        refused = [r for r in results if r not in served]
        assert all(r.status == 402 and r.error_type == "insufficient_quota" for r in refused), outcomes
        assert len(served) <= AFFORDABLE
        # nothing else was spending: the grant covers exactly 100 calls, and all of them ran
        assert len(served) == AFFORDABLE, outcomes
        assert lowest["balance"] >= 0 and lowest["available"] >= 0, lowest

        events = books.usage(account.id, limit=10_000)
        assert len(events) == len(served)
        assert len({e.hold_id for e in events}) == len(events), "a hold was charged twice"
        balance = books.balance(account.id)
        assert balance.balance == granted(books, account.id) - sum(e.charged for e in events)
        assert granted(books, account.id) == grant and balance.balance == 0
        assert balance.held == 0 and open_holds(pg_url) == 0
        assert books.audit() == []
    finally:
        for p in proxies:
            p.stop()
        books.dispose()

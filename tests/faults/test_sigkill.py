"""The proxy is SIGKILLed in the middle of calls, then a new one starts on the same ledger.

Every call whose whole response reached the client is charged exactly once; a call cut
off by the kill is charged at most once, and its hold is voided by the new proxy's
sweeper once its TTL has passed.

Each call runs on an account of its own, so what happened to each call can be read
from the ledger without guessing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ledger import Ledger

from .support import (
    MICRO,
    CallResult,
    chat,
    fault_catalog,
    granted,
    http_client,
    open_holds,
    proxy_env,
    run_bounded,
    slow_upstream,
    start_proxy,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e

CALLS = 48
WORKERS = 8
KILL_AFTER = 16
HOLD_TTL = 5


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("stop", "journal"),
    [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGKILL, True)],
    # with the settle journal, finished charges may be on disk only: the next proxy applies them
    ids=["SIGKILL", "SIGTERM", "SIGKILL-journal"],
)
def test_a_killed_proxy_loses_no_finished_charge_and_leaks_no_hold(
    tmp_path: Path, stop: signal.Signals, journal: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    books = Ledger(url)
    books.create_schema()
    keys: list[tuple[int, str]] = []
    for i in range(CALLS + 1):
        account = books.open_account("user", f"kill-{i}", tier="pro")
        books.grant(account.id, 100 * MICRO, source="purchase", external_ref=f"kill-{i}")
        keys.append((account.id, books.issue_key(account.id, user_id=f"kill-{i}").plaintext))

    env = proxy_env(url, fault_catalog(tmp_path), CREDITS_HOLD_TTL_SECONDS=str(HOLD_TTL))
    if journal:
        env["CREDITS_SETTLE_MODE"] = "journal"
    with slow_upstream() as port:
        config = write_config(tmp_path, port)
        first = start_proxy(tmp_path, env, config=config)
        finished = Counter[str]()
        lock = threading.Lock()
        killed = threading.Event()

        def killer() -> None:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                with lock:
                    if finished["done"] >= KILL_AFTER:
                        break
                time.sleep(0.005)
            killed.set()  # calls not yet begun are not sent; those in flight are cut off
            first.process.send_signal(stop)
            first.process.wait(timeout=60)  # a graceful stop lets the calls in flight finish

        try:
            with http_client(WORKERS) as client:

                def job(i: int) -> CallResult:
                    if killed.is_set():
                        return CallResult(index=i, stream=i % 2 == 1, extra={"not_sent": True})
                    result = chat(
                        client,
                        first.base_url,
                        keys[i][1],
                        i,
                        model="demo-slow",
                        stream=i % 2 == 1,
                        body={"max_tokens": 64},
                    )
                    with lock:
                        finished["done"] += 1
                    return result

                chaos = threading.Thread(target=killer, daemon=True)
                chaos.start()
                results = run_bounded([lambda i=i: job(i) for i in range(CALLS)], WORKERS, 120)
                chaos.join(timeout=30)
            assert killed.is_set(), "the proxy was not killed"
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{first.base_url}/health/liveliness", timeout=2)
        finally:
            first.stop()

        complete = [r for r in results if r.complete]
        sent = [r for r in results if not r.extra.get("not_sent")]
        cut = [r for r in sent if not r.complete]
        summary = Counter(
            ("complete" if r.complete else "cut" if not r.extra.get("not_sent") else "not sent")
            + (" stream" if r.stream else "")
            for r in results
        )
        print(f"\n{stop.name} run: {dict(summary)}; open holds after the stop: {open_holds(url)}")
        # SIGKILL must cut calls off; after SIGTERM every call in flight may well finish
        assert complete and (cut or stop is signal.SIGTERM), f"the stop did not land mid-run: {summary}"
        assert all(r.status in (200, None) for r in sent), [
            (r.status, r.message) for r in sent if r.status != 200
        ]

        # a new proxy on the same ledger sweeps the holds of the calls the kill cut off
        second = start_proxy(tmp_path, env, config=config)
        try:
            with http_client(1) as client:
                trigger = chat(client, second.base_url, keys[CALLS][1], CALLS, body={"max_tokens": 64})
            assert trigger.complete, trigger
            assert wait_for(lambda: open_holds(url) == 0, HOLD_TTL + 30), (
                f"{open_holds(url)} holds still open after TTL {HOLD_TTL}s\n{second.log()[-3000:]}"
            )
        finally:
            second.stop()

    charged = {r.index: len(books.usage(keys[r.index][0], limit=10)) for r in results}
    lost = [r for r in complete if charged[r.index] == 0]
    doubled = [r for r in results if charged[r.index] > 1]
    assert not doubled, f"charged more than once: {doubled}"
    lost_plain = [r for r in lost if not r.stream]
    assert not lost_plain, f"non-streaming calls served but never charged: {lost_plain}"
    # a stream's [DONE] is sent only after its charge is on disk (ledger or outbox)
    assert not lost, f"{len(lost)} streams reached [DONE] at the client but were never charged: {lost}"
    for r in results:
        balance = books.balance(keys[r.index][0])
        assert balance.held == 0
        events = books.usage(keys[r.index][0])
        assert balance.balance == granted(books, keys[r.index][0]) - sum(e.charged for e in events)
    for r in results:
        if r.extra.get("not_sent"):
            assert charged[r.index] == 0
    cut_charged = sum(charged[r.index] for r in cut)
    print(f"cut calls charged (served upstream before the kill): {cut_charged} of {len(cut)}")
    assert books.audit() == []
    books.dispose()


@pytest.mark.timeout(240)
def test_a_stream_killed_right_after_done_is_charged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    books = Ledger(url)
    books.create_schema()
    account = books.open_account("user", "stream-kill", tier="pro")
    books.grant(account.id, 1000 * MICRO, source="purchase", external_ref="stream-kill")
    key = books.issue_key(account.id, user_id="stream-kill").plaintext
    env = proxy_env(url, fault_catalog(tmp_path), CREDITS_HOLD_TTL_SECONDS=str(HOLD_TTL))
    with slow_upstream() as port:
        config = write_config(tmp_path, port)
        proxy = start_proxy(tmp_path, env, config=config)
        try:
            payload = {
                "model": "demo-slow",
                "messages": [{"role": "user", "content": "hello there"}],
                "max_tokens": 64,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            done = False
            with (
                httpx.Client(timeout=30) as client,
                client.stream(
                    "POST",
                    f"{proxy.base_url}/v1/chat/completions",
                    json=payload,
                    headers={"authorization": f"Bearer {key}"},
                ) as response,
            ):
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.strip() == "data: [DONE]":
                        done = True
                        # the whole answer reached the client: the process dies now
                        proxy.process.send_signal(signal.SIGKILL)
                        break
            proxy.process.wait(timeout=10)
        finally:
            proxy.stop()
        assert done
        second = start_proxy(tmp_path, env, config=config)
        try:
            with http_client(1) as client:
                # a call of its own starts the new proxy's sweeper and outbox drain
                other = books.open_account("user", "stream-kill-trigger", tier="pro")
                books.grant(other.id, 1000 * MICRO, source="purchase", external_ref="stream-kill-trigger")
                trigger_key = books.issue_key(other.id, user_id="stream-kill-trigger").plaintext
                assert chat(client, second.base_url, trigger_key, 0, body={"max_tokens": 64}).complete
            assert wait_for(lambda: open_holds(url) == 0, HOLD_TTL + 30)
        finally:
            second.stop()
    try:
        assert books.audit() == []
        assert books.balance(account.id).held == 0
        assert len(books.usage(account.id)) == 1, "the stream the client received in full was never charged"
    finally:
        books.dispose()

"""PostgreSQL crashes (``pg_ctl -m immediate``) and comes back during a run of calls.

Each call either was served and is charged exactly once (a charge that could not be
written during the outage waits in the outbox and lands when the database is back), or
failed with a clear error and is charged nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from ledger import Ledger

from .private_pg import PrivatePostgres
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
    start_proxy,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e

CALLS = 300
WORKERS = 6
STOP_AFTER = CALLS // 3
OUTAGE_SECONDS = 3.0
GRANT = 10_000 * MICRO
HOLD_TTL = 10


@pytest.mark.timeout(240)
def test_every_served_call_is_charged_once_across_a_database_crash(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    url = private_pg.url
    books = Ledger(url)
    books.create_schema()
    account = books.open_account("user", "outage", tier="pro")
    books.grant(account.id, GRANT, source="purchase", external_ref="outage-grant")
    key = books.issue_key(account.id, user_id="outage").plaintext

    proxy = start_proxy(
        tmp_path,
        proxy_env(url, fault_catalog(tmp_path), CREDITS_HOLD_TTL_SECONDS=str(HOLD_TTL)),
        config=write_config(tmp_path),
    )
    outbox = tmp_path / "outbox.jsonl"
    done = Counter[str]()
    lock = threading.Lock()
    outage: dict[str, float] = {}

    def crash_and_restart() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if done["calls"] >= STOP_AFTER:
                    break
            time.sleep(0.01)
        outage["down"] = time.monotonic()
        private_pg.stop("immediate")
        time.sleep(OUTAGE_SECONDS)
        private_pg.start()
        outage["up"] = time.monotonic()

    try:
        with http_client(WORKERS) as client:

            def job(i: int) -> CallResult:
                result = chat(client, proxy.base_url, key, i, stream=i % 4 == 3)
                with lock:
                    done["calls"] += 1
                if result.status == 503:
                    time.sleep(0.5)  # a polite client: back off when told billing is unavailable
                return result

            chaos = threading.Thread(target=crash_and_restart, daemon=True)
            chaos.start()
            results = run_bounded([lambda i=i: job(i) for i in range(CALLS)], WORKERS, deadline_seconds=150)
            chaos.join(timeout=60)
        assert "up" in outage, "the database was not restarted"
        assert len(results) == CALLS

        served = [r for r in results if r.status == 200 and r.complete]
        failed = [r for r in results if not (r.status == 200 and r.complete)]
        during = [r for r in results if r.ended >= outage["down"] and r.started <= outage["up"]]
        by_outcome = Counter(f"{r.status}/{r.error_type}" for r in results)
        parked = proxy.log().count("CHARGE NOT WRITTEN")
        print(
            f"\noutage run: {by_outcome}, {len(during)} calls overlapped the outage, {parked} charges parked"
        )
        # service came back: calls that started after the restart were served
        assert any(r.status == 200 for r in results if r.started > outage["up"] + 1), by_outcome

        # the outage was real: some calls met it
        assert any(r.status == 503 for r in results), by_outcome
        # a failed call says why: billing unavailable (503) or no credits (402), nothing vaguer
        unclear = [
            r
            for r in failed
            if (r.status, r.error_type) not in {(503, "billing_unavailable"), (402, "insufficient_quota")}
        ]
        assert not unclear, "calls failed without a clear billing error:\n" + "\n".join(
            f"#{r.index} stream={r.stream} status={r.status} type={r.error_type} {r.message[:300]}"
            for r in unclear[:10]
        )
        retry = [r for r in failed if r.status == 503]
        assert all(r.message for r in retry)

        # the outbox drains (sweep interval 1 s) and orphaned holds expire (TTL 10 s)
        assert wait_for(lambda: not outbox.exists() or outbox.read_text().strip() == "", 60), (
            f"outbox not drained:\n{outbox.read_text()[:2000]}\n{proxy.log()[-3000:]}"
        )

        def settled() -> bool:
            return open_holds(url) == 0 and books.balance(account.id).held == 0

        assert wait_for(settled, 60), f"holds still open: {open_holds(url)}"

        events = books.usage(account.id, limit=10_000)
        hold_ids = [e.hold_id for e in events]
        assert len(hold_ids) == len(set(hold_ids)), "a hold was charged twice"
        assert all(e.charged > 0 for e in events)
        assert len(events) == len(served), (
            f"{len(served)} calls served but {len(events)} usage events written "
            f"(streams served: {sum(r.stream for r in served)})\n{proxy.log()[-3000:]}"
        )
        charges = [e for e in books.history(account.id, limit=100_000) if e.kind == "charge"]
        assert len(charges) == len(served)
        balance = books.balance(account.id)
        assert balance.balance == granted(books, account.id) - sum(e.charged for e in events)
        assert balance.held == 0
        assert books.audit() == []
    finally:
        proxy.stop()
        books.dispose()

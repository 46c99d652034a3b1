"""What applying the settle journal's batches costs per charge, and where.

The journal's writer charges calls in batches (``ledger.journal.apply_charges``). With
SQLite all of that runs in the proxy's own process, on the cores the event loop needs;
with PostgreSQL the writer builds the statements and the server does the rest, on the
same machine. The proxy figures cannot tell this cost apart from LiteLLM's; here it is
measured alone: batches of charges lent from one escrow (the default path of a proxy's
calls) applied to a fresh ledger, the writer's thread CPU and the server's CPU divided
by the charges.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from ledger import Ledger
from ledger.ids import new_hold_id
from ledger.journal import apply_charges
from ledger.outbox import PendingCharge

from . import ledger_bench, pg, pg_server
from .snapshot import drop_snapshot
from .stats import percentile, r


def measure(
    url: str,
    *,
    batch: int = 256,
    batches: int = 20,
    rounds: int = 3,
    server: pg_server.ServerWatch | None = None,
) -> dict[str, Any]:
    """``rounds`` rounds of ``batches`` batches of ``batch`` charges on the ledger at ``url``
    (a fresh one: the account and escrow are made here). The round medians, per charge."""
    books = Ledger(url)
    try:
        books.create_schema()
        account = books.open_account("user", "apply-bench", tier="free")
        books.grant(account.id, ledger_bench.PLENTY, source="bench", external_ref="apply-bench")
        escrow = books.hold(account.id, 10**14, ttl_seconds=3600, reference="bench-gpt-4o")

        def one_batch() -> list[PendingCharge]:
            return [
                PendingCharge(
                    new_hold_id(), 75, ledger_bench.USAGE, account_id=account.id, escrow_hold_id=escrow.id
                )
                for _ in range(batch)
            ]

        apply_charges(books, one_batch())  # warm-up: statements prepared, caches filled
        writer_us: list[float] = []
        server_us: list[float] = []
        for _ in range(rounds):
            work = [one_batch() for _ in range(batches)]
            before = server.sample() if server else None
            started = time.thread_time()
            dropped = sum(apply_charges(books, charges) for charges in work)
            spent = time.thread_time() - started
            if dropped:
                raise RuntimeError(f"{dropped} charges dropped applying the bench's batches")
            writer_us.append(spent / (batch * batches) * 1e6)
            if server and before:
                cpu = pg_server.difference(before, server.sample())["pg_cpu_s"]
                if cpu is not None:
                    server_us.append(float(cpu) / (batch * batches) * 1e6)
        problems = books.audit()
        if problems:
            raise RuntimeError(f"the ledger does not add up after the apply bench: {problems[:3]}")
    finally:
        books.dispose()
    return {
        "batch": batch,
        "charges_per_round": batch * batches,
        "writer_cpu_us_per_charge": r(percentile(writer_us, 50), 1),
        "writer_rounds": [r(x, 1) for x in writer_us],
        "server_cpu_us_per_charge": r(percentile(server_us, 50), 1) if server_us else None,
    }


def measure_each(urls: dict[str, str], **sizes: int) -> dict[str, dict[str, Any]]:
    """``measure`` on each database of ``urls`` ("sqlite", "postgresql"), the PostgreSQL
    server's CPU watched; ``sizes``: ``measure``'s batch, batches and rounds."""
    out: dict[str, dict[str, Any]] = {}
    for backend, url in urls.items():
        server = pg_server.ServerWatch(url) if backend == "postgresql" else None
        try:
            out[backend] = measure(url, server=server, **sizes)
        finally:
            if server:
                server.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apply_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", metavar="REV", help="measure this commit's src/ (a git archive snapshot)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg-url", default=pg.DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    with ledger_bench.tempdir() as tmp, contextlib.ExitStack() as stack:
        urls = {"sqlite": ledger_bench.sqlite_url(Path(tmp), "apply.db")}
        if pg.available(args.pg_url) is not None:
            urls["postgresql"] = stack.enter_context(pg.temp_database(args.pg_url))
        out = measure_each(urls, batch=args.batch, batches=args.batches, rounds=args.rounds)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    from .snapshot import reexec_on_commit

    reexec_on_commit("bench.apply_bench", sys.argv[1:])
    try:
        sys.exit(main())
    finally:
        drop_snapshot()

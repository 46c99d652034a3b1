"""One fast path of the ledger benchmark alone, in a loop: cycles/s and CPU per cycle.

``python -m bench.fast_path_loop redis --threads 1 --seconds 3 --rounds 2`` runs the
hot-account cycle of section 2 (``ledger_bench.FastPath``) on a fresh PostgreSQL
database, without the raw rounds or the other paths, so a profiler or ``strace`` can be
put on it alone (``strace -f --seccomp-bpf -T -e trace=fdatasync`` gives the kernel's
time per fsync).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

from .ledger_bench import DEFAULT_REDIS_URL, FastPath, open_books
from .pg import DEFAULT_ADMIN_URL, temp_database


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fast_path_loop", description=__doc__)
    parser.add_argument("path", choices=("journal", "escrow", "redis"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_ADMIN_URL),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args(argv)
    with temp_database(args.pg_url) as url, tempfile.TemporaryDirectory() as workdir:
        books, ids = open_books(url, 1)
        path = FastPath(args.path, url, Path(workdir), args.redis_url)
        try:
            path.run(ids[0], 1, 0.5, 10**9)  # warm-up: the first escrow, pools, imports
            for n in range(1, args.rounds + 1):
                cpu = _cpu_seconds()
                result = path.run(ids[0], args.threads, args.seconds, 10**9)
                cpu = _cpu_seconds() - cpu
                ops = max(result["ops"], 1)
                print(
                    f"{args.path} threads={args.threads} round {n}: {result['ops'] / result['elapsed_s']:,.0f} cycles/s, "
                    f"process CPU {cpu / ops * 1e6:.0f} µs per cycle, {path.counts()}, errors {result['errors']}",
                    flush=True,
                )
        finally:
            path.close()
            books.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

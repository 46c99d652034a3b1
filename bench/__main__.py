"""``python -m bench``: the benchmark suite of litellm-credits (see docs/BENCHMARKS.md).

    .venv/bin/python -m bench            # about 5 minutes
    .venv/bin/python -m bench --quick    # about 1 minute
    .venv/bin/python -m bench --out bench-results/results.json
    .venv/bin/python -m bench --commit HEAD  # measure a commit's src/, not the work tree's

Prints the figures as tables with PASS/FAIL against the targets (it never fails
because of a target), writes them as JSON and a markdown summary next to it.
Every child process is stopped on exit, on an exception and on Ctrl+C; every
temporary PostgreSQL database is dropped.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    from .snapshot import reexec_on_commit

    reexec_on_commit("bench", sys.argv[1:])

# after the re-exec: these import the ledger, from the snapshot when --commit is given
from . import apply_bench, hooks_bench, ledger_bench, machine, pg, pg_server, procs, proxy_bench, report
from .snapshot import drop_snapshot

# the full run took 14 minutes with one process per variant (826-840 s), 16 with two
# (971-974 s: their start-up and warm-up)
HARD_LIMIT_S = {"quick": 6 * 60, "full": 28 * 60}


@dataclass(frozen=True)
class Plan:
    levels: list[proxy_bench.Level]
    warmup_requests: int
    max_requests: int
    ledger_threads: list[int]
    ledger_accounts: int
    ledger_cell_seconds: float
    ledger_rounds: int
    ledger_max_ops: int
    count_cycles: int
    profile_cycles: int
    master_key_variant: bool
    hooks_calls: int
    hooks_rounds: int
    # proxy processes per variant (``proxy_bench.replicas``); a level's rounds are each process's
    processes: int


PLANS = {
    "quick": Plan(
        levels=[proxy_bench.Level(1, False, 4, 1.5), proxy_bench.Level(16, False, 2, 2.5)],
        warmup_requests=40,
        max_requests=20_000,
        ledger_threads=[1, 8],
        ledger_accounts=100,
        ledger_cell_seconds=2.0,
        ledger_rounds=2,
        ledger_max_ops=200_000,
        count_cycles=50,
        profile_cycles=100,
        master_key_variant=False,
        hooks_calls=500,
        hooks_rounds=2,
        processes=1,
    ),
    "full": Plan(
        # one call at a time follows the host's swings closely (its `without` rate moved
        # 51-93 req/s between 2 s rounds on one host): more, shorter rounds, more time.
        # At 16 a full GC (0.3-0.9 s, one per ~600 requests in every proxy) lands in a
        # round or not: more rounds, so each proxy gets its share. With five, three or
        # four of them (0.45 s each) made 7 % of a proxy's 20 s, and one or two more or fewer
        # than `without` moved its ratio 2-5 % (2026-12-07: ten). Two processes per variant
        # (``processes``), each half the rounds: one process's luck moved a ratio by up to
        # 10 %, whatever the rounds.
        levels=[
            proxy_bench.Level(1, False, 6, 2.0),
            proxy_bench.Level(16, False, 5, 4.0),
            proxy_bench.Level(4, True, 2, 4.5),
        ],
        warmup_requests=150,
        max_requests=100_000,
        ledger_threads=[1, 8],
        ledger_accounts=100,
        ledger_cell_seconds=5.0,
        ledger_rounds=3,
        ledger_max_ops=1_000_000,
        count_cycles=200,
        profile_cycles=400,
        master_key_variant=True,
        hooks_calls=1000,
        hooks_rounds=3,
        processes=2,
    ),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _timeout(_signum: int, _frame: object) -> None:
    raise TimeoutError("the benchmark ran past its hard time limit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute instead of about five")
    parser.add_argument("--out", type=Path, default=Path("bench-results/results.json"))
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", pg.DEFAULT_ADMIN_URL),
        help="an admin URL; the bench creates and drops credits_bench_<random> databases there",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip everything that needs PostgreSQL")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the proxies and the client to separate cores"
    )
    parser.add_argument("--commit", metavar="REV", help="measure this commit's src/ (a git archive snapshot)")
    parser.add_argument("--skip-proxy", action="store_true")
    parser.add_argument("--skip-ledger", action="store_true")
    parser.add_argument("--skip-hooks", action="store_true", help="skip the plugin-alone figures")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", ledger_bench.DEFAULT_REDIS_URL),
        help="Redis for the escrow path (keys under a random credits-bench-* prefix, removed at the end)",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis escrow figures")
    args = parser.parse_args(argv)

    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    procs.install_cleanup()
    atexit.register(drop_snapshot)
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(HARD_LIMIT_S[mode])
    started = time.monotonic()
    try:
        results = run(args, mode, plan)
    finally:
        signal.alarm(0)
        procs.stop_all()
    results["wall_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path = args.out.with_suffix(".md")
    md_path.write_text(report.render_markdown(results))
    print(report.render_text(results))
    print(f"results: {args.out} and {md_path} ({results['wall_s']} s)")
    return 0


def run(args: argparse.Namespace, mode: str, plan: Plan) -> dict[str, Any]:
    pg_version = None if args.no_postgres else pg.available(args.pg_url)
    if not args.no_postgres and pg_version is None:
        log(f"PostgreSQL not reachable at {args.pg_url}: its figures are skipped")
    info = machine.describe(pg_version)
    if pg_version:
        info["postgresql_settings"] = ", ".join(f"{k}={v}" for k, v in pg.settings(args.pg_url).items())
    log(
        f"machine: {info['nproc']} cores, {info['cpu_model']}, others busy {info['others_cpu_busy_pct_at_start']}%"
    )
    cores = procs.cores()
    pin = not args.no_pin and len(cores) >= 2
    proxy_cpus = {cores[0]} if pin else None
    client_cpus = {cores[1]} if pin else None
    results: dict[str, Any] = {
        "mode": mode,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "plan": plan.__dict__,
        "pinning": {
            "proxy_cpus": sorted(proxy_cpus or []),
            "client_and_upstream_cpus": sorted(client_cpus or []),
        },
    }
    with ledger_bench.tempdir() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        info["journal_fsync_us"] = machine.journal_fsync_us(workdir)
        pg_ledger_url = None
        new_pg_url = None
        if pg_version:
            pg_ledger_url = stack.enter_context(pg.temp_database(args.pg_url))

            def new_pg_url() -> str:
                return stack.enter_context(pg.temp_database(args.pg_url))

        if not args.skip_proxy:
            log("proxy overhead:")
            results["proxy"] = proxy_section(workdir, plan, new_pg_url, proxy_cpus, client_cpus)
        if not args.skip_ledger:
            log("ledger throughput:")
            results["ledger"] = ledger_section(
                workdir, plan, pg_ledger_url, None if args.no_redis else args.redis_url
            )
        if not args.skip_hooks:
            log("the plugin alone (its hooks driven in-process, no proxy):")
            results["plugin_alone"] = hooks_bench.run(
                workdir,
                lambda: stack.enter_context(pg.temp_database(args.pg_url)) if pg_version else None,
                list(hooks_bench.VARIANTS),
                calls=plan.hooks_calls,
                rounds=plan.hooks_rounds,
                concurrency=16,
                warmup=plan.hooks_calls // 4,
                log=log,
            )
        results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["targets"] = report.targets(results)
    return results


def proxy_section(
    workdir: Path,
    plan: Plan,
    new_pg_url: Callable[[], str] | None,
    proxy_cpus: set[int] | None,
    client_cpus: set[int] | None,
) -> dict[str, Any]:
    upstream = proxy_bench.spawn_upstream(client_cpus)
    variants: list[proxy_bench.Variant] = []
    # any database of the server will do to read its CPU time
    server = pg_server.ServerWatch(new_pg_url()) if new_pg_url else None

    def sqlite_url(process: str) -> str:
        return f"sqlite:///{workdir / f'proxy-ledger-{process}.db'}"

    def plugin(
        group: str, database: str, env: dict[str, str] | None = None, master_key: bool = False
    ) -> list[proxy_bench.Variant]:
        def make(process: str) -> proxy_bench.Variant:
            url = sqlite_url(process) if database == "sqlite" else new_pg_url() if new_pg_url else ""
            # each process's journal in a directory of its own
            settings = {"CREDITS_JOURNAL_DIR": str(workdir / f"journal-{process}"), **(env or {})}
            return proxy_bench.Variant(process, True, url, workdir, env=settings, master_key=master_key)

        return proxy_bench.replicas(make, group, plan.processes)

    try:
        port = procs.wait_port_line(upstream)
        variants = [
            *proxy_bench.replicas(
                lambda process: proxy_bench.Variant(process, False, None, workdir), "without", plan.processes
            ),
            *plugin("with_sqlite", "sqlite"),
        ]
        if plan.master_key_variant:
            # the plugin loaded, authenticating, never billing: a proxy of its own, so
            # with_sqlite's memory and full GCs carry with_sqlite's load only
            variants += plugin("with_sqlite_master_key", "sqlite", master_key=True)
        if new_pg_url:
            variants += plugin("with_postgresql", "postgresql")
        for name, (database, env) in proxy_bench.SETTING_VARIANTS.items():
            if database == "sqlite" or new_pg_url:
                variants += plugin(name, database, env)
        out = proxy_bench.run(
            variants,
            port,
            plan.levels,
            plan.max_requests,
            plan.warmup_requests,
            proxy_cpus,
            client_cpus,
            log,
            server,
        )
        out["upstream_port"] = port
    finally:
        proxy_bench.stop(variants)
        procs.stop(upstream)
        if server:
            server.close()
    # each proxy logs its journal's counts as it stops: where its fsyncs ran
    out["journal"] = {v.name: c for v in variants if (c := proxy_bench.journal_counts(v)) is not None}
    return out


def ledger_section(workdir: Path, plan: Plan, pg_url: str | None, redis_url: str | None) -> dict[str, Any]:
    backends = {"sqlite": ledger_bench.sqlite_url(workdir, "ledger-bench.db")}
    if pg_url:
        backends["postgresql"] = pg_url
    out: dict[str, Any] = {"accounts": plan.ledger_accounts}
    out["throughput"] = ledger_bench.throughput(
        backends,
        plan.ledger_threads,
        plan.ledger_accounts,
        plan.ledger_cell_seconds,
        plan.ledger_rounds,
        plan.ledger_max_ops,
        workdir,
        log,
        redis_url=redis_url,
    )
    log("applying the journal's batches:")
    apply_urls = {
        backend: ledger_bench.sqlite_url(workdir, "ledger-apply.db") if backend == "sqlite" else url
        for backend, url in backends.items()
    }
    out["apply"] = apply_bench.measure_each(apply_urls)
    for backend, a in out["apply"].items():
        server_text = a["server_cpu_us_per_charge"]
        log(
            f"  {backend}: writer {a['writer_cpu_us_per_charge']} µs CPU per charge"
            + (f", server {server_text} µs" if server_text is not None else "")
        )
    log("statement counts and profile:")
    out["statements"] = {}
    out["profile"] = {}
    for backend in backends:
        # fresh databases of their own, so the big throughput tables do not weigh on them
        url = (
            ledger_bench.sqlite_url(workdir, "ledger-count.db") if backend == "sqlite" else backends[backend]
        )
        out["statements"][backend] = ledger_bench.count_statements(url, backend, workdir, plan.count_cycles)
        out["profile"][backend] = ledger_bench.profile(
            ledger_bench.sqlite_url(workdir, "ledger-profile.db") if backend == "sqlite" else url,
            backend,
            plan.profile_cycles,
        )
    # the raw per-thread latency lists are large and say nothing the percentiles do not
    for cells in out["throughput"].values():
        for cell in cells.values():
            if isinstance(cell, dict):
                for part in cell.values():
                    if isinstance(part, dict):
                        part.pop("latencies_ms", None)
    return out


if __name__ == "__main__":
    sys.exit(main())

"""A/B of plugin settings: proxies that differ only in ``CREDITS_*`` settings, one run.

    python -m bench.ab --concurrency 1 --rounds 6 --seconds 6 \\
        l50=postgresql:CREDITS_JOURNAL_LINGER_MS=50 \\
        l250=postgresql:CREDITS_JOURNAL_LINGER_MS=250

Each variant is ``NAME=DATABASE[:SETTING=VALUE,...]`` (DATABASE: ``sqlite`` or
``postgresql``; ``master``: the plugin on SQLite called with the master key, loaded
and authenticating, billing nothing; ``none``: one more proxy without the plugin, to
see how far two of the same differ); the settings are added to the plugin's defaults and
``CREDITS_ASYNC_HOLDS=true`` (``--plain``: to the defaults alone). A proxy without the plugin runs beside them, and the
rounds alternate between all of them, as in ``python -m bench``. Prints req/s, the ratio
to ``without``, the proxy's CPU per request and the latencies, and checks the books.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from . import ledger_bench, pg, pg_server, procs, proxy_bench


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    """``NAME=DATABASE[:K=V,...]`` -> (name, database, settings)."""
    name, sep, rest = text.partition("=")
    database, _, pairs = rest.partition(":")
    if not sep or not name or database not in ("sqlite", "postgresql", "master", "none"):
        raise argparse.ArgumentTypeError(
            f"expected NAME=sqlite|postgresql|master|none[:K=V,...], got {text!r}"
        )
    settings: dict[str, str] = {}
    for pair in filter(None, pairs.split(",")):
        key, eq, value = pair.partition("=")
        if not eq or not key.startswith("CREDITS_"):
            raise argparse.ArgumentTypeError(f"expected CREDITS_NAME=VALUE in {text!r}, got {pair!r}")
        settings[key] = value
    return name, database, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", type=parse_variant, metavar="NAME=DATABASE[:K=V,...]")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="per round and variant")
    parser.add_argument("--stream", action="store_true", help="streamed completions")
    parser.add_argument(
        "--plain", action="store_true", help="on the plugin's defaults alone (no async holds)"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="proxy processes per variant, `without` included"
    )
    parser.add_argument("--pg-url", default=pg.DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)

    procs.install_cleanup()
    cores = procs.cores()
    proxy_cpus, client_cpus = ({cores[0]}, {cores[1]}) if len(cores) >= 2 else (None, None)
    base = {} if args.plain else proxy_bench.ASYNC_HOLDS_ENV
    with ledger_bench.tempdir() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        upstream = proxy_bench.spawn_upstream(client_cpus)
        stack.callback(procs.stop, upstream)
        variants = proxy_bench.replicas(
            lambda process: proxy_bench.Variant(process, False, None, workdir), "without", args.processes
        )
        for name, database, settings in args.variants:

            def make(
                process: str, database: str = database, settings: dict[str, str] = settings
            ) -> proxy_bench.Variant:
                if database == "none":
                    return proxy_bench.Variant(process, False, None, workdir)
                url = (
                    stack.enter_context(pg.temp_database(args.pg_url))
                    if database == "postgresql"
                    else f"sqlite:///{workdir / f'{process}.db'}"
                )
                env = {"CREDITS_JOURNAL_DIR": str(workdir / f"journal-{process}"), **base, **settings}
                return proxy_bench.Variant(
                    process, True, url, workdir, env=env, master_key=database == "master"
                )

            variants += proxy_bench.replicas(make, name, args.processes)
        stack.callback(proxy_bench.stop, variants)
        server = None
        if any(database == "postgresql" for _, database, _ in args.variants):
            server = pg_server.ServerWatch(args.pg_url)
            stack.callback(server.close)
        out = proxy_bench.run(
            variants,
            procs.wait_port_line(upstream),
            [proxy_bench.Level(args.concurrency, args.stream, args.rounds, args.seconds)],
            10**9,
            300,
            proxy_cpus,
            client_cpus,
            print,
            server,
        )
        stack.close()  # the proxies stop, and log their journal's counts as they do
        out["journal"] = {v.name: c for v in variants if (c := proxy_bench.journal_counts(v)) is not None}
    report(out, f"c{args.concurrency}" + ("_stream" if args.stream else ""))
    return 0


def report(out: dict[str, Any], label: str) -> None:
    level = out["levels"][label]
    without = level["without"]
    print(f"\n{label}: req/s, ratio to without [90 % interval], proxy CPU ms/req (added), p50 (added), p99")
    for name, x in level.items():
        if not isinstance(x, dict):
            continue
        cpu, p50 = x["proxy_cpu_ms_per_request"], x["p50_ms"]
        band = x.get("x_without_interval")
        band_text = f" [{band[0]}, {band[1]}]" if band else " " * 15
        print(
            f"  {name:24s} {x['rps']:7.1f}  {x['rps'] / without['rps']:.3f}{band_text}"
            f"  {cpu:6.2f} ({cpu - without['proxy_cpu_ms_per_request']:+.2f})"
            f"  {p50:7.2f} ({p50 - without['p50_ms']:+.2f})  {x['p99_ms']:7.1f}"
            f"  rounds {x['rounds_rps']}  processes {x['processes_rps']}"
            f"  full GCs {x['full_gcs']} ({x['full_gc_s']} s)"
            f"  loop thread {x['proxy_loop_cpu_ms_per_request']} ms/req"
            f"  kernel {x['proxy_sys_ms_per_request']} ms/req"
            f"  context switches {sum(t['switches'] for t in x['proxy_threads_per_request'].values()):.1f}/req"
            f"  page faults {sum(t['minor_faults'] for t in x['proxy_threads_per_request'].values()):.1f}/req"
            + (
                f"  PostgreSQL server {x['pg_cpu_ms_per_request']} ms/req, {x['pg_checkpoints']} checkpoints"
                if x["pg_cpu_ms_per_request"] is not None
                else ""
            )
        )
    print("  per thread and request: CPU ms / context switches / page faults")
    for name, x in level.items():
        if isinstance(x, dict):
            threads = x["proxy_threads_per_request"]
            print(
                f"  {name:24s} "
                + ", ".join(
                    f"{t} {v['cpu_ms']} / {v['switches']} / {v['minor_faults']}" for t, v in threads.items()
                )
            )
    disk = out.get("disk_fsync_us", {}).get(label)
    if disk:
        print(f"  disk between rounds: fdatasync p50 {disk['p50']} µs, p99 {disk['p99']} µs")
    for name, counts in out.get("journal", {}).items():
        print(
            f"  journal {name}: {counts['charges']} charges, {counts['fsyncs']} fsyncs, "
            f"{counts['fsyncs_off_loop']} of them off the event loop (the whole run, warm-up included)"
        )
    for name, books in out["books_check"].items():
        ok = books["ok_responses"] == books["usage_events"] and not books["audit_problems"]
        print(
            f"  books {name}: {books['ok_responses']} responses, {books['usage_events']} usage events, "
            f"audit {'ok' if ok else books['audit_problems']}"
        )


if __name__ == "__main__":
    raise SystemExit(main())

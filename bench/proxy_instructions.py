"""``python -m bench.proxy_instructions``: the proxy's instructions per request, with and without the plugin.

The proxy table of ``python -m bench`` measures req/s, the target's own figure, on a
machine whose other tenants take 20-35 % of the cores and whose LiteLLM runs a
0.3-0.9 s full collection every ~1,100 requests: identical runs differ by ±10 %.
This counts what the load cannot move. Each proxy (the ``python -m bench`` variants,
started the same way) runs under valgrind's callgrind, counting nothing until a
window starts; then, per window, ``callgrind_control`` zeroes and reads the
instruction count of every thread of the proxy around ``--requests`` requests from
the same load generator. Windows alternate between the proxies, which run side by
side (a count does not depend on what else runs).

- **instructions per request** is the median over the windows. A window in which a
  full collection ran (the bench's gc probe says so) is as much as 50 requests'
  worth above the others; the median leaves those out, for every proxy alike, and
  the table says how many there were.
- **x without** = ``without``'s instructions per request ÷ the variant's: the req/s
  ratio the proxy would reach where its core is the bottleneck (c=16 on one core),
  if every instruction cost the same time. Time spent waiting (the journal's fsync,
  PostgreSQL's own work in its server processes) is not in it.
- Under valgrind a call takes some 50x longer, so the plugin's jobs that run per
  second of wall time are slowed down to match (``instructions.PLUGIN_SETTINGS``).

About 10 minutes with the defaults (three proxies, 7 windows of 40 requests at c=1).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import instructions, ledger_bench, pg, procs, proxy_bench
from .hooks_bench import VARIANTS
from .snapshot import drop_snapshot
from .stats import percentile, r

HARD_LIMIT_S = 60 * 60
# a request under valgrind, queued behind 15 others on a core shared with other proxies
SLOW_REQUEST_S = 600.0
DEFAULT_VARIANTS = "without,with_postgresql,with_sqlite"


def _timeout(_signum: int, _frame: object) -> None:
    raise TimeoutError("the instruction count ran past its hard time limit")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def window(variant: proxy_bench.Variant, requests: int, concurrency: int) -> dict[str, Any]:
    """One counted window of ``requests`` requests against one proxy."""
    assert variant.proc is not None
    with instructions.counting(variant.proc.pid) as counted:
        result = proxy_bench.load(variant, concurrency, 1800, requests, False, None, SLOW_REQUEST_S)
    if result["errors"] or not result["ok"]:
        raise RuntimeError(f"{variant.name}: {result['errors']} errors, first: {result['first_error']}")
    return {
        "requests": result["ok"],
        "instructions_per_request": counted[0] / result["ok"],
        "full_gcs": result["full_gcs"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy_instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--commit", metavar="REV", help="count this commit's src/ (a git archive snapshot)")
    parser.add_argument(
        "--variants", default=DEFAULT_VARIANTS, help=f"without and any of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--requests", type=int, default=40, help="per window")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=60, help="requests per proxy before counting")
    parser.add_argument(
        "--unbilled",
        action="store_true",
        help="also count the first plugin proxy called with the master key (loaded, billing nothing)",
    )
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", pg.DEFAULT_ADMIN_URL))
    parser.add_argument("--out", type=Path, default=Path("bench-results/proxy-instructions.json"))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n != "without" and n not in VARIANTS]
    if unknown or "without" not in names:
        parser.error(f"give without and any of {', '.join(VARIANTS)}; unknown: {', '.join(unknown)}")
    instructions.check_tools()
    procs.install_cleanup()
    atexit.register(drop_snapshot)
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(HARD_LIMIT_S)
    started = time.monotonic()
    try:
        results = run(args, names)
    finally:
        signal.alarm(0)
        procs.stop_all()
    results["wall_s"] = r(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    print(f"results: {args.out} ({results['wall_s']} s)")
    return 0


def run(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    pg_there = pg.available(args.pg_url) is not None
    out: dict[str, Any] = {
        "measured_commit": os.environ.get("BENCH_MEASURED_COMMIT", "work tree"),
        "concurrency": args.concurrency,
        "requests_per_window": args.requests,
        "windows": args.windows,
        "variants": {},
    }
    with ledger_bench.tempdir() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        callgrind_dir = tempfile.mkdtemp(prefix="bench-callgrind-", dir=workdir)
        upstream = proxy_bench.spawn_upstream(None)
        stack.callback(procs.stop, upstream)
        port = procs.wait_port_line(upstream)
        variants: list[proxy_bench.Variant] = []
        for name in names:
            if name == "without":
                variants.append(proxy_bench.Variant(name, False, None, workdir))
                continue
            database, settings = VARIANTS[name]
            if database == "postgresql" and not pg_there:
                log(f"{name}: PostgreSQL not reachable at {args.pg_url}, skipped")
                continue
            url = (
                f"sqlite:///{workdir / f'proxy-{name}.db'}"
                if database == "sqlite"
                else stack.enter_context(pg.temp_database(args.pg_url))
            )
            env = {**settings, **instructions.PLUGIN_SETTINGS}
            variants.append(proxy_bench.Variant(name, True, url, workdir, env=env))
        stack.callback(proxy_bench.stop, variants)
        for v in variants:
            if v.plugin:
                proxy_bench.prepare_books(v)
            proxy_bench.launch(v, port, None, wrapper=instructions.wrapper(callgrind_dir))
        log(f"{len(variants)} proxies starting under callgrind (a minute or more each)")
        for v in variants:
            proxy_bench.wait_ready(v, 900)
        # one lane per process: a lane's windows run one after the other, lanes side by side
        lanes = [[v] for v in variants]
        billed = next((v for v in variants if v.plugin), None)
        if args.unbilled and billed is not None:
            # the same plugin proxy called with the master key: it authenticates, bills nothing
            unbilled = proxy_bench.Variant(
                f"{billed.name}_master_key", False, None, workdir, proc=billed.proc, port=billed.port
            )
            next(lane for lane in lanes if lane[0] is billed).append(unbilled)
        per: dict[str, list[dict[str, Any]]] = {v.name: [] for lane in lanes for v in lane}

        def lane_windows(lane: list[proxy_bench.Variant]) -> list[dict[str, Any]]:
            return [window(v, args.requests, args.concurrency) for v in lane]

        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            warm = list(
                pool.map(
                    lambda v: proxy_bench.load(v, 4, 1800, args.warmup, False, None, SLOW_REQUEST_S), variants
                )
            )
            for v, w in zip(variants, warm, strict=True):
                if w["errors"]:
                    raise RuntimeError(f"warm-up of {v.name} failed: {w['first_error']}")
            for n in range(args.windows):
                counted = [c for lane in pool.map(lane_windows, lanes) for c in lane]
                named = [v for lane in lanes for v in lane]
                for v, c in zip(named, counted, strict=True):
                    per[v.name].append(c)
                log(
                    f"  window {n + 1}/{args.windows}: "
                    + ", ".join(
                        f"{v.name} {c['instructions_per_request'] / 1e6:.2f} M/req"
                        for v, c in zip(named, counted, strict=True)
                    )
                )
        books = proxy_bench.check_books(variants)
    base = (
        percentile([w["instructions_per_request"] for w in per.get("without", [])], 50)
        if per.get("without")
        else None
    )
    for name, windows in per.items():
        mid = percentile([w["instructions_per_request"] for w in windows], 50)
        out["variants"][name] = {
            "instructions_per_request": round(mid),
            "x_without": r(base / mid, 3) if base else None,
            "added_per_request": round(mid - base) if base is not None else None,
            "windows_per_request": [round(w["instructions_per_request"]) for w in windows],
            "windows_with_full_gc": sum(1 for w in windows if w["full_gcs"]),
            "books": books.get(name),
        }
    return out


def render(results: dict[str, Any]) -> str:
    lines = [
        f"instructions per request (median of {results['windows']} windows of "
        f"{results['requests_per_window']} requests, c={results['concurrency']}, "
        f"code {results['measured_commit']})",
        f"{'proxy':<34} {'M instr/req':>12} {'x without':>10} {'added M':>8}  windows with a full GC   books",
    ]
    for name, v in results["variants"].items():
        b = v["books"]
        books = (
            f"{b['usage_events']} events / {b['ok_responses']} responses, audit "
            + ("ok" if not b["audit_problems"] else "PROBLEMS")
            if b
            else ""
        )
        added = v["added_per_request"]
        lines.append(
            f"{name:<34} {v['instructions_per_request'] / 1e6:>12.3f} "
            f"{v['x_without'] if v['x_without'] is not None else '':>10} "
            f"{(added / 1e6 if added is not None else 0):>+8.3f}  {v['windows_with_full_gc']:>22}   {books}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from .snapshot import reexec_on_commit

    reexec_on_commit("bench.proxy_instructions", sys.argv[1:])
    sys.exit(main())

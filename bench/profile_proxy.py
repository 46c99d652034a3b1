"""``python -m bench.profile_proxy``: where a billed call's CPU goes inside the proxy process.

Starts the same fake upstream and LiteLLM proxies as ``python -m bench`` (one
core for the proxy, the other for the client, the upstream and the sampler),
warms each proxy up, then drives it at a fixed concurrency while py-spy samples
it (``py-spy record --gil --nonblocking --format raw --full-filenames``). With
``--gil`` only the thread holding the GIL is sampled, so a sample is a moment the
proxy runs Python code (py-spy's own idle detection does not see the thread
pools' idle workers here, and its default blocking mode slowed the proxy 5-10x;
non-blocking at 100 Hz costs a few %). Native work with the GIL released
(sqlite3 stepping, libpq, syscalls) is not sampled: the gap between the sampled
ms and the proxy's measured CPU ms per request is that. Every sample's stack is
then classified:

- **plugin**: the stack has a frame of ``src/credit_hooks``, ``src/ledger`` or
  ``src/pricing`` (whatever that frame calls, SQLAlchemy or the driver included);
- **LiteLLM and the rest**: everything else (LiteLLM, FastAPI, uvicorn, asyncio,
  the OpenAI client ...), which the ``without`` proxy also spends.

It reports the plugin's share of the proxy's CPU, split by the plugin function
that is innermost on the stack ("own + libraries": its own lines plus what it
calls outside the plugin) and by hook, and converts shares to CPU ms per request
(samples ÷ rate ÷ requests served in the window).

    .venv/bin/pip install py-spy      # once; root, or ptrace allowed
    .venv/bin/python -m bench.profile_proxy --commit HEAD
    .venv/bin/python -m bench.profile_proxy --commit HEAD --variants without,with_sqlite --seconds 30

Writes ``bench-results/profile/<variant>.txt`` (collapsed stacks; open them in
https://www.speedscope.app or feed them to flamegraph.pl) and ``profile.json``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    from .snapshot import reexec_on_commit

    reexec_on_commit("bench.profile_proxy", sys.argv[1:])

import argparse
import atexit
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import pg, procs, proxy_bench
from .snapshot import drop_snapshot

PY_SPY = Path(sys.executable).with_name("py-spy")
# "function (path/to/file.py:123)"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PLUGIN = re.compile(r"/src/(?P<pkg>credit_hooks|ledger|pricing)/(?P<rest>[^:]+\.py)$")
_BUCKETS = [
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("sqlite3", "/sqlite3/"),
    ("litellm", "/litellm/"),
    ("openai / httpx / aiohttp", "/openai/"),
    ("openai / httpx / aiohttp", "/httpx/"),
    ("openai / httpx / aiohttp", "/httpcore/"),
    ("openai / httpx / aiohttp", "/aiohttp/"),
    ("fastapi / starlette / uvicorn", "/fastapi/"),
    ("fastapi / starlette / uvicorn", "/starlette/"),
    ("fastapi / starlette / uvicorn", "/uvicorn/"),
    ("pydantic", "/pydantic"),
    ("asyncio", "/asyncio/"),
    ("threads / executor", "/concurrent/futures/"),
    ("threads / executor", "/threading.py"),
]


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    @property
    def plugin(self) -> str | None:
        """``credit_hooks/gate.py`` for a plugin frame, None otherwise."""
        m = _PLUGIN.search(self.file)
        return f"{m['pkg']}/{m['rest']}" if m else None

    @property
    def name(self) -> str:
        where = self.plugin
        if where is None:
            where = self.file
            for marker in ("/site-packages/", "/lib/python3"):
                if marker in where:
                    where = where.split(marker, 1)[1]
                    break
        return f"{where}:{self.func}"

    @property
    def bucket(self) -> str:
        if self.plugin is not None:
            return "plugin's own code (" + self.plugin.split("/")[0] + ")"
        for name, marker in _BUCKETS:
            if marker in self.file:
                return name
        return "other (stdlib, C)"


def parse_raw(path: Path) -> list[tuple[list[Frame], int]]:
    """py-spy's ``--format raw`` output: ``frame;frame;... count`` per line, outermost frame first."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            if part.startswith(("thread (", "process ")):
                continue
            m = _FRAME.match(part)
            frames.append(Frame(m["func"], m["file"]) if m else Frame(part, ""))
        stacks.append((frames, int(count)))
    return stacks


def _entry(frames: list[Frame]) -> str:
    """The outermost plugin frame; through the gate's executor hop, the ledger call it runs."""
    plugin = [f for f in frames if f.plugin is not None]
    for f in plugin:
        if f.func == "<lambda>" and f.plugin == "credit_hooks/gate.py":
            continue  # gate.run's lambda: name what it runs instead
        return f.name + (" (ledger thread pool)" if plugin[0].func == "<lambda>" else "")
    return plugin[0].name


def analyse(
    stacks: list[tuple[list[Frame], int]], ms_per_sample_per_request: float, top: int = 25
) -> dict[str, Any]:
    """``ms_per_sample_per_request`` = 1000 / rate / requests served while sampling."""
    total = sum(n for _, n in stacks)
    plugin_total = 0
    innermost: Counter[str] = Counter()  # innermost plugin frame: own lines + non-plugin callees
    inclusive: Counter[str] = Counter()  # any plugin frame of that function on the stack
    entries: Counter[str] = Counter()
    plugin_leaf_bucket: Counter[str] = Counter()
    other_leaf: Counter[str] = Counter()
    other_bucket: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        plugin = [f for f in frames if f.plugin is not None]
        if plugin:
            plugin_total += n
            innermost[plugin[-1].name] += n
            for name in {f.name for f in plugin}:
                inclusive[name] += n
            entries[_entry(frames)] += n
            plugin_leaf_bucket[frames[-1].bucket] += n
        else:
            other_leaf[frames[-1].name] += n
            other_bucket[frames[-1].bucket] += n

    def share(counter: Counter[str], limit: int = top) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "samples": n,
                "pct_of_sampled": round(100 * n / total, 1),
                "ms_per_request": round(ms_per_sample_per_request * n, 3),
            }
            for name, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "plugin_samples": plugin_total,
        "sampled_ms_per_request": round(ms_per_sample_per_request * total, 3),
        "plugin_pct_of_sampled": round(100 * plugin_total / total, 1) if total else 0.0,
        "plugin_ms_per_request": round(ms_per_sample_per_request * plugin_total, 3),
        "plugin_by_innermost_function": share(innermost),
        "plugin_by_function_inclusive": share(inclusive),
        "plugin_by_entry": share(entries),
        "plugin_by_leaf_library": share(plugin_leaf_bucket),
        "rest_by_leaf_library": share(other_bucket),
        "rest_by_leaf_function": share(other_leaf, 15),
    }


def record(
    variant: proxy_bench.Variant,
    out: Path,
    seconds: float,
    rate: int,
    concurrency: int,
    client_cpus: set[int] | None,
    stream: bool = False,
) -> dict[str, Any]:
    assert variant.proc is not None
    argv = [str(PY_SPY), "record", "--pid", str(variant.proc.pid), "--duration", str(int(seconds))]
    argv += [
        "--rate",
        str(rate),
        "--gil",
        "--nonblocking",
        "--format",
        "raw",
        "--full-filenames",
        "-o",
        str(out),
    ]
    spy = procs.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cpus=client_cpus)
    try:
        # the load outlasts the sampling window a little on both ends; the CPU per request
        # is the load's own (the proxy serves nothing else)
        result = proxy_bench.load(variant, concurrency, seconds + 1.0, 10**7, stream, client_cpus)
        _, err = spy.communicate(timeout=seconds + 60)
    finally:
        procs.stop(spy)
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-2000:]}")
    ok = int(result["ok"])
    return {
        "requests": ok,
        "errors": result["errors"],
        "rps": round(ok / result["elapsed_s"], 1),
        "requests_in_window": round(ok / result["elapsed_s"] * seconds),
        "proxy_cpu_ms_per_request": round(result["proxy_cpu_s"] * 1000 / ok, 2) if ok else None,
    }


def render(name: str, run: dict[str, Any], rows: int = 12) -> str:
    a = run["analysis"]
    lines = [
        f"== {name}: c={run['concurrency']}, {run['requests']} requests, {run['rps']} req/s, "
        f"proxy CPU {run['proxy_cpu_ms_per_request']} ms/req (/proc), {a['samples']} samples holding the GIL "
        f"= {a['sampled_ms_per_request']} ms/req",
        f"plugin frames on the stack: {a['plugin_pct_of_sampled']}% of the samples "
        f"= {a['plugin_ms_per_request']} ms/req",
    ]

    def table(title: str, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        lines.append(f"-- {title}")
        for it in items[:rows]:
            lines.append(f"  {it['pct_of_sampled']:5.1f}%  {it['ms_per_request']:7.3f} ms  {it['name']}")

    table(
        "plugin, by innermost plugin function (own lines + libraries it calls)",
        a["plugin_by_innermost_function"],
    )
    table("plugin, by function (inclusive)", a["plugin_by_function_inclusive"])
    table("plugin, by entry (hook, or ledger call on the thread pool)", a["plugin_by_entry"])
    table("plugin samples, by the library on top of the stack", a["plugin_by_leaf_library"])
    table("not plugin (LiteLLM's own), by library on top of the stack", a["rest_by_leaf_library"])
    table("not plugin, top leaf functions", a["rest_by_leaf_function"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_proxy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--commit", metavar="REV", help="profile this commit's src/ (a git archive snapshot)")
    parser.add_argument("--variants", default="without,with_sqlite,with_postgresql")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--stream", action="store_true", help="streamed completions")
    parser.add_argument("--out", type=Path, default=Path("bench-results/profile"))
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", pg.DEFAULT_ADMIN_URL))
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    if not PY_SPY.exists() and shutil.which("py-spy") is None:
        sys.exit(f"py-spy not found next to {sys.executable}: .venv/bin/pip install py-spy")
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    procs.install_cleanup()
    atexit.register(drop_snapshot)
    cores = procs.cores()
    pin = not args.no_pin and len(cores) >= 2
    proxy_cpus = {cores[0]} if pin else None
    client_cpus = {cores[1]} if pin else None
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "commit": os.environ.get("BENCH_MEASURED_COMMIT", "work tree"),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="credits-profile-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        upstream = proxy_bench.spawn_upstream(client_cpus)
        port = procs.wait_port_line(upstream)
        variants = []
        for name in wanted:
            if name == "without":
                variants.append(proxy_bench.Variant(name, False, None, workdir))
            elif name in ("with_sqlite", "with_sqlite_master_key"):
                # the master key's calls: the plugin loaded and authenticating, never billing
                url = f"sqlite:///{workdir / f'proxy-{name}.db'}"
                master_key = name.endswith("_master_key")
                variants.append(proxy_bench.Variant(name, True, url, workdir, master_key=master_key))
            elif (
                name == "with_postgresql" or proxy_bench.SETTING_VARIANTS.get(name, ("",))[0] == "postgresql"
            ):
                if pg.available(args.pg_url) is None:
                    print(f"PostgreSQL not reachable at {args.pg_url}: {name} skipped", file=sys.stderr)
                    continue
                url = stack.enter_context(pg.temp_database(args.pg_url))
                env = proxy_bench.SETTING_VARIANTS.get(name, ("", {}))[1]
                variants.append(proxy_bench.Variant(name, True, url, workdir, env=dict(env)))
            elif name in proxy_bench.SETTING_VARIANTS:
                url = f"sqlite:///{workdir / f'proxy-{name}.db'}"
                env = proxy_bench.SETTING_VARIANTS[name][1]
                variants.append(proxy_bench.Variant(name, True, url, workdir, env=dict(env)))
            else:
                sys.exit(f"unknown variant {name!r}")
        try:
            for v in variants:
                if v.plugin:
                    proxy_bench.prepare_books(v)
                proxy_bench.launch(v, port, proxy_cpus)
            for v in variants:
                proxy_bench.wait_ready(v, proxy_bench.STARTUP_SECONDS)
                warm = proxy_bench.load(v, 4, 60, 300, False, client_cpus)
                if warm["errors"]:
                    raise RuntimeError(f"warm-up of {v.name} failed: {warm['first_error']}")
            for v in variants:
                raw = args.out / f"{v.name}.txt"
                run = record(v, raw, args.seconds, args.rate, args.concurrency, client_cpus, args.stream)
                run["concurrency"] = args.concurrency
                run["raw_stacks"] = str(raw)
                per_sample = 1000 / args.rate / max(1, run["requests_in_window"])
                run["analysis"] = analyse(parse_raw(raw), per_sample)
                results["runs"][v.name] = run
                print(render(v.name, run), flush=True)
                print(flush=True)
        finally:
            proxy_bench.stop(variants)
            procs.stop(upstream)
    results["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    (args.out / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"load average at start {results['loadavg_at_start']}, at end {results['loadavg_at_end']}")
    print(f"profile: {args.out}/profile.json and the collapsed stacks beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())

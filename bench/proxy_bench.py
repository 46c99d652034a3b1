"""Proxy overhead: the same LiteLLM proxy with and without the plugin, in front of a fake upstream.

Variants (each its own ``litellm`` process, started the way an operator starts it):
  without          plain config, LiteLLM's master-key auth, no callbacks
  with_sqlite      + ``callbacks: credit_hooks.credits_callback`` and
                   ``custom_auth: credit_hooks.auth.user_api_key_auth``, SQLite ledger file
  with_postgresql  the same on a fresh PostgreSQL database (when the server is there)
  with_*_direct, with_postgresql_async_holds
                   the plugin with other settings (``SETTING_VARIANTS``)

Rounds alternate between the variants at each concurrency, each round starting one
variant further on (A, B, C, then B, C, A, then C, A, B, ...), so a slow moment of the
machine hits every variant alike. Shorter rounds alternate more often: one call at a
time gets more, shorter rounds than 16 (``Level``), because its rate follows the
host's swings most closely.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from sqlalchemy import func, select

from ledger import Ledger
from ledger.tables import UsageEventRow

from . import machine, pg_server, procs
from .stats import percentile, r, rate_ratio_interval

MASTER_KEY = "sk-bench-master-5d1c0e7b9a3f4e2d8c6b"
MODEL_GROUP = "bench-gpt-4o"
# the one deployment behind MODEL_GROUP (the fake upstream takes any key)
UPSTREAM_MODEL = "openai/gpt-4o"
UPSTREAM_KEY = "sk-fake-upstream"
LITELLM = Path(sys.executable).with_name("litellm")
GC_PROBE = Path(__file__).resolve().with_name("gc_probe")
PLENTY_MICRO = 10**15


class Level(NamedTuple):
    """One load level: concurrency, streamed or not, and how it is split into rounds."""

    concurrency: int
    stream: bool
    rounds: int
    round_seconds: float


def proxy_config(upstream_port: int, plugin: bool) -> str:
    lines = [
        "# written by bench/proxy_bench.py",
        "model_list:",
        f"  - model_name: {MODEL_GROUP}",
        "    litellm_params:",
        f"      model: {UPSTREAM_MODEL}",
        f"      api_base: http://127.0.0.1:{upstream_port}/v1",
        f"      api_key: {UPSTREAM_KEY}",
        "litellm_settings:",
        "  num_retries: 0",
    ]
    if plugin:
        lines += [
            "  callbacks: credit_hooks.credits_callback",
            "general_settings:",
            "  custom_auth: credit_hooks.auth.user_api_key_auth",
        ]
    return "\n".join(lines) + "\n"


# with_sqlite and with_postgresql run the plugin's defaults (charges journaled and applied
# in batches, rich accounts' calls lent from an in-process escrow); beside them:
# the defaults with PostgreSQL holds committed without waiting for the WAL flush
ASYNC_HOLDS_ENV = {"CREDITS_ASYNC_HOLDS": "true"}
# the settings that were the defaults until 2026-12: each charge committed to the ledger
# before its response, each call a hold of its own
DIRECT_ENV = {"CREDITS_SETTLE_MODE": "direct", "CREDITS_ESCROW": "off"}
# variant name -> (database: "sqlite" or "postgresql", its CREDITS_* settings)
SETTING_VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "with_postgresql_async_holds": ("postgresql", ASYNC_HOLDS_ENV),
    "with_postgresql_direct": ("postgresql", DIRECT_ENV),
    "with_sqlite_direct": ("sqlite", DIRECT_ENV),
}


@dataclass
class Variant:
    name: str
    plugin: bool
    database_url: str | None
    workdir: Path
    key: str = MASTER_KEY
    account_id: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path | None = None
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sent_ok: int = 0
    # CREDITS_* settings of this proxy (the fast paths: settle journal, async holds, Redis)
    env: dict[str, str] = field(default_factory=dict)
    master_key: bool = False  # called with the master key: the plugin loaded, billing nothing
    # the variant this proxy is one process of (``replicas``): its figures are the group's
    group: str = ""

    def __post_init__(self) -> None:
        self.group = self.group or self.name

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def process_name(group: str, index: int) -> str:
    """The name of a variant's ``index``-th process (0: the variant's own name)."""
    return group if index == 0 else f"{group}#{index + 1}"


def replicas(make: Callable[[str], Variant], group: str, processes: int) -> list[Variant]:
    """``processes`` proxies of one variant, each built by ``make(process name)`` (its own
    database, journal and log). Two proxy processes of the same code and settings,
    measured in the same rounds, differed by up to 10 % in req/s at c=16 on the bench
    host (2026-12-07: three ``without`` proxies 1.000 / 0.925 / 0.932 of the first, with
    one hash seed); a variant's figures are those of all its processes together, so that
    one process's luck is not taken for the plugin's cost. A round takes them in turn
    with the other groups' (``interleaved``)."""
    made = []
    for index in range(processes):
        variant = make(process_name(group, index))
        variant.group = group
        made.append(variant)
    return made


def interleaved(variants: list[Variant]) -> list[Variant]:
    """The order of a round: each group's first process, then each group's second, ...

    The host's speed drifts over seconds. With a group's processes one after the other,
    each group had a block of the round to itself, and the drift went into the ratios:
    four ``without`` proxies against four more of the same (c=1, 2 s rounds) came out
    1.108 and, in the next run, 0.957. Spread out, each group samples the whole round."""
    groups: dict[str, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.group, []).append(v)
    depth = max((len(members) for members in groups.values()), default=0)
    return [members[i] for i in range(depth) for members in groups.values() if i < len(members)]


def spawn_upstream(cpus: set[int] | None) -> subprocess.Popen[bytes]:
    """The fake OpenAI-compatible upstream (``bench.fake_upstream``); its port comes on stdout."""
    return procs.spawn(
        [sys.executable, "-m", "bench.fake_upstream", "--port", "0"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        cpus=cpus,
    )


def prepare_books(variant: Variant) -> None:
    """Schema, one funded account and one key issued by the ledger (``Ledger.issue_key``);
    the schema alone for a variant called with the master key."""
    assert variant.database_url is not None
    books = Ledger(variant.database_url)
    try:
        books.create_schema()
        if not variant.master_key:
            variant.account_id, variant.key = fund(books, "bench-user")
    finally:
        books.dispose()


def fund(books: Ledger, user: str) -> tuple[int, str]:
    """One account with plenty of credit and a key bound to it: (account id, the key)."""
    account = books.open_account("user", user, tier="free")
    books.grant(account.id, PLENTY_MICRO, source="bench", external_ref=f"{user}-credits")
    return account.id, books.issue_key(account.id, user_id=user, alias="bench").plaintext


def launch(variant: Variant, upstream_port: int, cpus: set[int] | None, wrapper: Sequence[str] = ()) -> None:
    """Start the variant's proxy; ``wrapper``: a command prefix (valgrind) before the interpreter."""
    config = variant.workdir / f"litellm-{variant.name}.yaml"
    config.write_text(proxy_config(upstream_port, variant.plugin))
    variant.port = procs.free_port()
    variant.log_path = variant.workdir / f"proxy-{variant.name}.log"
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "CREDITS_OUTBOX_PATH": str(variant.workdir / f"outbox-{variant.name}.jsonl"),
    }
    if variant.database_url:
        env["CREDITS_DATABASE_URL"] = variant.database_url
    env.update(variant.env)
    # counts the proxy's full garbage collections (bench/gc_probe), read around each round
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(GC_PROBE), env.get("PYTHONPATH", "")) if p)
    env["BENCH_GC_STATS"] = str(gc_stats_path(variant))
    with variant.log_path.open("wb") as log:
        program = [*wrapper, sys.executable] if wrapper else []
        variant.proc = procs.spawn(
            [
                *program,
                str(LITELLM),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(variant.port),
            ],
            env=env,
            cwd=variant.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            cpus=cpus,
        )


def gc_stats_path(variant: Variant) -> Path:
    return variant.workdir / f"gc-{variant.port}.json"


def full_collections(variant: Variant) -> tuple[int, float]:
    """The proxy's full garbage collections so far, and their seconds."""
    try:
        totals = json.loads(gc_stats_path(variant).read_text())
    except (OSError, ValueError):
        return 0, 0.0
    return int(totals["full"]), float(totals["seconds"])


# how long a proxy may take to answer its liveliness check: those started together import
# LiteLLM at once on the proxies' core (a full run's first of fourteen took 164 s)
STARTUP_SECONDS = 300.0


def log_tail(variant: Variant) -> str:
    """The end of a proxy's log, for an error that says why it is gone."""
    assert variant.log_path is not None
    return variant.log_path.read_text(errors="replace")[-3000:]


def wait_ready(variant: Variant, timeout: float) -> float:
    assert variant.proc is not None
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if variant.proc.poll() is not None:
            raise RuntimeError(
                f"proxy {variant.name} exited with {variant.proc.returncode}:\n" + log_tail(variant)
            )
        try:
            if httpx.get(f"{variant.base_url}/health/liveliness", timeout=1).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"proxy {variant.name} not up after {timeout}s:\n" + log_tail(variant))


def load(
    variant: Variant,
    concurrency: int,
    seconds: float,
    max_requests: int,
    stream: bool,
    cpus: set[int] | None,
    request_timeout: float | None = None,
    server: pg_server.ServerWatch | None = None,
) -> dict[str, Any]:
    """One round of the load generator (a separate process) against one proxy; with
    ``server``, what the PostgreSQL server did meanwhile."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(variant.port),
        "--key",
        variant.key,
        "--model",
        MODEL_GROUP,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(seconds),
        "--max-requests",
        str(max_requests),
    ]
    if stream:
        argv.append("--stream")
    if request_timeout is not None:
        argv += ["--request-timeout", str(request_timeout)]
    assert variant.proc is not None
    cpu_before = procs.cpu_times(variant.proc.pid)
    threads_before = procs.threads(variant.proc.pid)
    gc_before = full_collections(variant)
    server_before = server.sample() if server else None
    proc = procs.spawn(
        argv,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cpus=cpus,
    )
    try:
        out, err = proc.communicate(timeout=seconds + 90)
    finally:
        procs.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(
            f"load generator failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}"
        )
    result: dict[str, Any] = json.loads(out)
    user, system = procs.cpu_times(variant.proc.pid)
    result["proxy_cpu_s"] = user + system - sum(cpu_before)
    used = {
        name: use - threads_before.get(name, procs.ThreadUse())
        for name, use in procs.threads(variant.proc.pid).items()
    }
    result["proxy_threads"] = {name: asdict(use) for name, use in used.items()}
    result["proxy_loop_cpu_s"] = used.get("event loop", procs.ThreadUse()).cpu_s
    if server and server_before:
        result.update(pg_server.difference(server_before, server.sample()))
    # the kernel's share: what instruction counts (bench.proxy_instructions) leave out
    result["proxy_sys_s"] = system - cpu_before[1]
    gc_after = full_collections(variant)
    result["full_gcs"] = gc_after[0] - gc_before[0]
    result["full_gc_s"] = gc_after[1] - gc_before[1]
    variant.sent_ok += int(result["ok"])
    return result


def per_thread(rounds: list[dict[str, Any]], ok: int) -> dict[str, dict[str, float | None]]:
    """Per thread name: CPU ms, context switches and minor page faults per request."""
    totals: dict[str, procs.ThreadUse] = {}
    for x in rounds:
        for name, use in x.get("proxy_threads", {}).items():
            totals[name] = totals.get(name, procs.ThreadUse()) + procs.ThreadUse(**use)
    if not ok:
        return {}
    return {
        name: {
            "cpu_ms": r(use.cpu_s * 1000 / ok, 2),
            "switches": r(use.switches / ok, 1),
            "minor_faults": r(use.minor_faults / ok, 1),
        }
        for name, use in sorted(totals.items(), key=lambda item: -item[1].cpu_s)
        if use.cpu_s or use.switches
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sum(x["ok"] for x in rounds)
    elapsed = sum(x["elapsed_s"] for x in rounds)
    lat = [v for x in rounds for v in x["latencies_ms"]]
    cpu = sum(x["proxy_cpu_s"] for x in rounds)

    def per_request_ms(key: str) -> float | None:
        values = [x.get(key) for x in rounds]
        if not ok or any(v is None for v in values):
            return None
        return r(sum(v for v in values if v is not None) * 1000 / ok, 2)

    return {
        "rps": r(ok / elapsed if elapsed else 0.0, 1),
        "proxy_cpu_ms_per_request": r(cpu * 1000 / ok if ok else float("nan"), 2),
        "proxy_sys_ms_per_request": r(
            sum(x.get("proxy_sys_s", 0.0) for x in rounds) * 1000 / ok if ok else float("nan"), 2
        ),
        # the event loop's thread; the rest is the ledger's pool, the journal's writer, ...
        "proxy_loop_cpu_ms_per_request": per_request_ms("proxy_loop_cpu_s"),
        # the PostgreSQL server's, in this variant's rounds (every proxy's rounds: the
        # server is shared, and its work for one proxy can land in another's round)
        "pg_cpu_ms_per_request": per_request_ms("pg_cpu_s"),
        "proxy_threads_per_request": per_thread(rounds, ok),
        "pg_checkpoints": sum(x.get("pg_checkpoints", 0) for x in rounds),
        "p50_ms": r(percentile(lat, 50), 2),
        "p99_ms": r(percentile(lat, 99), 2),
        "requests": ok,
        "errors": sum(x["errors"] for x in rounds),
        "first_error": next((x["first_error"] for x in rounds if x["first_error"]), ""),
        "charged_header": sum(x["charged"] for x in rounds),
        "rounds_rps": [r(x["ok"] / x["elapsed_s"], 1) for x in rounds if x["elapsed_s"]],
        # LiteLLM's own full collections (0.3-0.9 s each) land in some rounds and not others
        "full_gcs": sum(x.get("full_gcs", 0) for x in rounds),
        "full_gc_s": r(sum(x.get("full_gc_s", 0.0) for x in rounds), 2),
    }


# fsyncs timed after each round: 6-15 ms of the disk's time between rounds of 2-4 s
FSYNC_PROBES_PER_ROUND = 60


def run(
    variants: list[Variant],
    upstream_port: int,
    levels: list[Level],
    max_requests: int,
    warmup_requests: int,
    proxy_cpus: set[int] | None,
    client_cpus: set[int] | None,
    log: Callable[[str], None],
    server: pg_server.ServerWatch | None = None,
) -> dict[str, Any]:
    for v in variants:
        if v.plugin:
            prepare_books(v)
    for v in variants:
        launch(v, upstream_port, proxy_cpus)
    startup = {v.name: r(wait_ready(v, STARTUP_SECONDS), 1) for v in variants}
    log("  proxies up: " + ", ".join(f"{k} {s}s" for k, s in startup.items()))
    idle = {}
    for v in variants:
        assert v.proc is not None
        # warm-up: first calls import and build lazily (the plugin's gate, LiteLLM's clients)
        w = load(v, 4, 60, warmup_requests, False, client_cpus)
        if w["errors"]:
            raise RuntimeError(f"warm-up of {v.name} failed: {w['first_error']}")
        idle[v.name] = procs.tree_rss_mb(v.proc.pid)
    results: dict[str, Any] = {}
    order = interleaved(variants)
    disk_fsync: dict[str, dict[str, float]] = {}
    for concurrency, stream, rounds, round_seconds in levels:
        label = f"c{concurrency}" + ("_stream" if stream else "")
        per_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
        disk: list[float] = []
        for n in range(rounds):
            # each round starts one process further on: none is always first after a pause
            # or always right after the same neighbour, whose leftover work (a journal's
            # last batch, PostgreSQL's flush) would land in its round every time
            for v in order[n % len(order) :] + order[: n % len(order)]:
                per_variant[v.name].append(
                    load(v, concurrency, round_seconds, max_requests, stream, client_cpus, server=server)
                )
            # one call at a time waits for its journal line's fsync before its response:
            # the added p50 follows the disk, which is not the same from one hour to the next
            disk += machine.fsync_samples(order[0].workdir, FSYNC_PROBES_PER_ROUND)
            log(
                f"  {label} round {n + 1}/{rounds}: "
                + ", ".join(
                    f"{k} {x[-1]['ok'] / x[-1]['elapsed_s']:.0f} req/s" for k, x in per_variant.items()
                )
            )
        results[label] = {"concurrency": concurrency, "stream": stream, **by_group(variants, per_variant)}
        disk_fsync[label] = machine.fsync_summary(disk)
    memory_processes: dict[str, dict[str, Any]] = {}
    for v in variants:
        assert v.proc is not None
        code = v.proc.poll()
        gone = {} if code is None else {"exit_code": code}
        after_load = procs.tree_rss_mb(v.proc.pid) if code is None else None
        memory_processes[v.name] = {"after_warmup": idle[v.name], "after_load": after_load, **gone}
        if code is not None:
            log(
                f"  {v.name} exited with code {code} before the end (its memory is left out):\n" + log_tail(v)
            )
    memory = group_memory(variants, memory_processes)
    books_check = check_books(variants)
    return {
        "startup_s": startup,
        "levels": results,
        # the journal's disk between the rounds of each level, µs (``machine.journal_fsync_us``)
        "disk_fsync_us": disk_fsync,
        "memory": memory,
        "memory_processes": memory_processes,
        "books_check": books_check,
    }


def by_group(variants: list[Variant], per_process: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One level's figures per variant, from the rounds of all its processes; beside them
    each process's own req/s (``processes_rps``), and the ratio's interval against the
    rounds of all of ``without``'s."""
    groups: dict[str, list[str]] = {}
    for v in variants:
        groups.setdefault(v.group, []).append(v.name)
    out: dict[str, Any] = {}
    for group, names in groups.items():
        rounds = [x for name in names for x in per_process[name]]
        out[group] = summarize(rounds)
        out[group]["processes_rps"] = [summarize(per_process[name])["rps"] for name in names]
    if "without" in groups:
        base = [(x["ok"], x["elapsed_s"]) for name in groups["without"] for x in per_process[name]]
        for group, names in groups.items():
            if group != "without":
                rates = [(x["ok"], x["elapsed_s"]) for name in names for x in per_process[name]]
                low, high = rate_ratio_interval(rates, base)
                out[group]["x_without_interval"] = [r(low, 3), r(high, 3)]
    return out


def group_memory(
    variants: list[Variant], memory_processes: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per group, the mean memory of its processes still running after the load.

    A process that exited has no memory to read (``/proc`` then reads as 0 MB): counted
    in, one ``without`` proxy that died in the last round (s51) halved its group's mean
    and made every plugin variant look 228 MB heavier. A group with none left is omitted.
    """
    out: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(v.group for v in variants):
        alive = [
            memory_processes[v.name]
            for v in variants
            if v.group == group and memory_processes[v.name]["after_load"] is not None
        ]
        if alive:
            out[group] = {
                moment: mean_of([m[moment] for m in alive]) for moment in ("after_warmup", "after_load")
            }
    return out


def mean_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each number across ``samples`` (one process's memory figures each)."""
    if len(samples) == 1:
        return samples[0]
    return {key: r(sum(s[key] for s in samples) / len(samples), 1) for key in samples[0]}


def check_books(variants: list[Variant]) -> dict[str, dict[str, Any]]:
    """Per plugin variant: its 200 responses, usage events, credit still held, audit problems."""
    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        if v.plugin and v.database_url and v.account_id is not None:
            books = Ledger(v.database_url)
            try:
                # a settle journal applies its last charges some ms after the responses
                deadline = time.monotonic() + 15
                while True:
                    with books._engine.connect() as conn:  # a count, not 10^5 dataclasses
                        usage = conn.execute(select(func.count()).select_from(UsageEventRow)).scalar_one()
                    if usage >= v.sent_ok or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                bal = books.balance(v.account_id)
                out[v.name] = {
                    "ok_responses": v.sent_ok,
                    "usage_events": usage,
                    "held_after": bal.held,
                    "audit_problems": books.audit()[:5],
                }
            finally:
                books.dispose()
    return out


_JOURNAL_AT_STOP = re.compile(
    r"settle journal applied at shutdown \((\d+) charges in all, (\d+) fsyncs, (\d+) of them off the event loop\)"
)


def journal_counts_in(log: str) -> dict[str, int] | None:
    """What a proxy's settle journal logged as it stopped: its charges, its fsyncs and how
    many of those ran on the ledger pool for the event loop (None: no such line)."""
    found = _JOURNAL_AT_STOP.search(log)
    if found is None:
        return None
    charges, fsyncs, off_loop = (int(n) for n in found.groups())
    return {"charges": charges, "fsyncs": fsyncs, "fsyncs_off_loop": off_loop}


def journal_counts(variant: Variant) -> dict[str, int] | None:
    """``journal_counts_in`` of a stopped variant's log."""
    if variant.log_path is None or not variant.log_path.exists():
        return None
    return journal_counts_in(variant.log_path.read_text(errors="replace"))


def stop(variants: list[Variant]) -> None:
    for v in variants:
        if v.proc is not None:
            procs.stop(v.proc)

"""The plugin alone: one billed call's hooks, driven in-process without a proxy.

The proxy figures carry LiteLLM's own 8-17 ms per request and the machine's swings;
the plugin's part of them is under 1 ms. Here the same hooks LiteLLM calls for a
non-streaming chat completion run back to back on a real ledger, so their CPU per
call can be read to a few µs:

  custom_auth -> async_pre_call_hook -> (async_log_success_event beside
  async_post_call_success_hook, as LiteLLM schedules them) -> the headers hook

with ``concurrency`` calls in flight on one event loop, the plugin's ledger thread
pool and the journal's writer as in the proxy. CPU is the whole process's
(``time.process_time``: every thread, the writer included), over a round that ends
once the ledger has every charge (the journal flushed), divided by the calls.
LiteLLM's router is real (the bench's one deployment) and its model map is the
local one; nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import instructions, ledger_bench, pg
from .proxy_bench import MODEL_GROUP, SETTING_VARIANTS, UPSTREAM_KEY, UPSTREAM_MODEL, fund
from .snapshot import drop_snapshot
from .stats import percentile, r

# the prices the fake upstream's usage (10 + 5 tokens of gpt-4o) costs in LiteLLM's map
PROMPT_TOKENS, COMPLETION_TOKENS = 10, 5
COST_USD = 10 * 2.5e-06 + 5 * 1e-05
# the proxy bench's plugin variants: name -> (database, CREDITS_* settings)
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "with_sqlite": ("sqlite", {}),
    "with_postgresql": ("postgresql", {}),
    **SETTING_VARIANTS,
}


@dataclass
class HooksResult:
    name: str
    calls: int = 0  # measured
    warmup: int = 0  # billed too, not measured
    rounds_cpu_us: list[float] = field(default_factory=list)
    rounds_calls_per_s: list[float] = field(default_factory=list)
    rounds_instructions: list[float] = field(default_factory=list)  # per call, under callgrind
    usage_events: int = 0
    audit_ok: bool = False
    # the settle journal's, over the measured calls: how many fsyncs, how many on the
    # ledger pool for the event loop (None: no journal, or a commit without the count)
    fsyncs: int | None = None
    fsyncs_handed_off: int | None = None

    def summary(self, harness_us: float, harness_instructions: float | None) -> dict[str, Any]:
        cpu = percentile(self.rounds_cpu_us, 50)
        counted = percentile(self.rounds_instructions, 50) if self.rounds_instructions else None
        return {
            "calls": self.calls,
            "calls_total": self.calls + self.warmup,
            "plugin_cpu_us_per_call": r(cpu - harness_us, 1),
            "plugin_instructions_per_call": (
                round(counted - harness_instructions)
                if counted is not None and harness_instructions is not None
                else None
            ),
            "instructions_per_call_rounds": [round(n) for n in self.rounds_instructions],
            "cpu_us_per_call_median": r(cpu, 1),
            "cpu_us_per_call_rounds": [r(c, 1) for c in self.rounds_cpu_us],
            "calls_per_s_rounds": [r(c, 0) for c in self.rounds_calls_per_s],
            "usage_events": self.usage_events,
            "audit_ok": self.audit_ok,
            "fsyncs_per_call": r(self.fsyncs / self.calls, 3)
            if self.fsyncs is not None and self.calls
            else None,
            "fsyncs_off_loop_per_call": (
                r(self.fsyncs_handed_off / self.calls, 3)
                if self.fsyncs_handed_off is not None and self.calls
                else None
            ),
        }


@contextmanager
def plugin_env(settings: dict[str, str]) -> Iterator[None]:
    """``CREDITS_*`` as the proxy would have them, for ``runtime.gate()``; restored after."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _router(model_group: str) -> Any:
    from litellm.proxy import proxy_server
    from litellm.router import Router

    router = Router(
        model_list=[
            {
                "model_name": model_group,
                "litellm_params": {
                    "model": UPSTREAM_MODEL,
                    "api_base": "http://127.0.0.1:9/v1",  # never called
                    "api_key": UPSTREAM_KEY,
                },
            }
        ]
    )
    proxy_server.llm_router = router
    return router


def _request(model_group: str, auth: Any) -> dict[str, Any]:
    # what LiteLLM's add_litellm_data_to_request has put in by the time the pre-call hook runs
    return {
        "model": model_group,
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "metadata": {
            "user_api_key_hash": auth.api_key,
            "user_api_key_user_id": auth.user_id,
            "user_api_key_team_id": auth.team_id,
            "user_api_key_alias": auth.key_alias,
        },
    }


def _response() -> Any:
    from litellm import ModelResponse

    response = ModelResponse(
        model="gpt-4o",
        choices=[{"index": 0, "message": {"role": "assistant", "content": "Hello there, how are you?"}}],
        usage={
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    )
    response._hidden_params = {
        "response_cost": COST_USD,
        "custom_llm_provider": "openai",
        "model": "gpt-4o",
        "litellm_model_name": "gpt-4o",
    }
    return response


def _event_kwargs(model_group: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "litellm_params": {"metadata": data["metadata"]},
        "response_cost": COST_USD,
        "standard_logging_object": {
            "model": "gpt-4o",
            "model_group": model_group,
            "custom_llm_provider": "openai",
            "call_type": "acompletion",
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "response_cost": COST_USD,
            "cache_hit": False,
            "stream": False,
        },
    }


async def one_call(key: str, model_group: str) -> None:
    from credit_hooks.auth import user_api_key_auth
    from credit_hooks.handler import credits_callback as hooks

    auth = await user_api_key_auth(None, key)  # type: ignore[arg-type]
    data = await hooks.async_pre_call_hook(auth, None, _request(model_group, auth), "acompletion")
    response = _response()
    now = time.time()
    # LiteLLM starts the success event as a task, then runs the post-call hook
    event = asyncio.ensure_future(
        hooks.async_log_success_event(_event_kwargs(model_group, data), response, now, now)
    )
    await hooks.async_post_call_success_hook(data, auth, response)
    await hooks.async_post_call_response_headers_hook(data, auth, response)
    await event


async def _nothing(*_: Any) -> None:
    return None


async def bare_call(auth: Any, model_group: str) -> None:
    """``one_call`` without the plugin: what the harness itself costs (subtracted)."""
    data = _request(model_group, auth)
    response = _response()
    now = time.time()
    event = asyncio.ensure_future(_nothing(_event_kwargs(model_group, data), response, now, now))
    await _nothing(data, auth, response)
    await event


async def _round(
    call: Callable[[Any, str], Awaitable[None]], who: Any, model_group: str, calls: int, concurrency: int
) -> None:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call(who, model_group)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(
    name: str,
    database_url: str,
    settings: dict[str, str],
    workdir: Path,
    *,
    calls: int,
    rounds: int,
    concurrency: int,
    warmup: int,
    model_group: str,
) -> HooksResult:
    """``rounds`` rounds of ``calls`` calls each; the books are checked at the end."""
    from sqlalchemy import func, select

    from credit_hooks import runtime
    from ledger import Ledger
    from ledger.tables import UsageEventRow

    books = Ledger(database_url)
    books.create_schema()
    account_id, key = fund(books, f"hooks-{name}")
    env = {
        "CREDITS_DATABASE_URL": database_url,
        "CREDITS_OUTBOX_PATH": str(workdir / f"outbox-hooks-{name}.jsonl"),
        "CREDITS_JOURNAL_DIR": str(workdir / f"journal-hooks-{name}"),
        "CREDITS_PERIOD_JOB_SECONDS": "0",
        **settings,
        **(instructions.PLUGIN_SETTINGS if instructions.active() else {}),
    }
    result = HooksResult(name, warmup=warmup)
    _router(model_group)
    with plugin_env(env):
        runtime.reset()
        gate = runtime.gate()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_round(one_call, key, model_group, warmup, concurrency))
            _settle_all(gate)
            journal_before = _journal_counts(gate)
            for _ in range(rounds):
                with instructions.counting() as counted:
                    wall, cpu = time.perf_counter(), time.process_time()
                    loop.run_until_complete(_round(one_call, key, model_group, calls, concurrency))
                    _settle_all(gate)  # the writer's batches are part of a call's cost
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                result.rounds_cpu_us.append(cpu / calls * 1e6)
                result.rounds_calls_per_s.append(calls / wall)
                result.rounds_instructions.extend(n / calls for n in counted)
                result.calls += calls
            journal_after = _journal_counts(gate)
            if journal_before is not None and journal_after is not None:
                result.fsyncs = journal_after[0] - journal_before[0]
                if journal_after[1] is not None and journal_before[1] is not None:
                    result.fsyncs_handed_off = journal_after[1] - journal_before[1]
            # the background jobs (catalog reload, sweeper) end with the gate
            runtime.reset()
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.close()
    with books._engine.connect() as conn:  # a count, not 10^5 dataclasses
        result.usage_events = int(
            conn.scalar(
                select(func.count()).select_from(UsageEventRow).where(UsageEventRow.account_id == account_id)
            )
            or 0
        )
    result.audit_ok = not books.audit()
    books.dispose()
    return result


def harness_cost(
    *, calls: int, rounds: int, concurrency: int, model_group: str
) -> tuple[float, float | None]:
    """CPU µs and instructions per call of ``bare_call``: the request, response and event
    objects LiteLLM would have built anyway, which ``measure`` builds too."""
    from litellm.proxy._types import UserAPIKeyAuth

    auth = UserAPIKeyAuth(api_key="0" * 64, token="0" * 64, user_id="bare", key_alias="bench")
    loop = asyncio.new_event_loop()
    cpus: list[float] = []
    counts: list[float] = []
    try:
        loop.run_until_complete(_round(bare_call, auth, model_group, calls // 4, concurrency))
        for _ in range(rounds):
            with instructions.counting() as counted:
                cpu = time.process_time()
                loop.run_until_complete(_round(bare_call, auth, model_group, calls, concurrency))
                cpus.append((time.process_time() - cpu) / calls * 1e6)
            counts.extend(n / calls for n in counted)
    finally:
        loop.close()
    return percentile(cpus, 50), (percentile(counts, 50) if counts else None)


def _journal_counts(gate: Any) -> tuple[int, int | None] | None:
    """The journal's fsyncs so far and how many of them ran on the pool (a commit measured
    with ``--commit`` may not count those: None)."""
    if gate.journal is None:
        return None
    stats = gate.journal.stats
    return stats.fsyncs, getattr(stats, "fsyncs_handed_off", None)


def _settle_all(gate: Any) -> None:
    if gate.journal is not None and not gate.journal.flush(60.0):
        raise RuntimeError("the settle journal did not apply its charges within 60 s")


def run(
    workdir: Path,
    pg_url_for: Callable[[], str | None],
    names: list[str],
    *,
    calls: int,
    rounds: int,
    concurrency: int,
    warmup: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Each variant in turn; ``pg_url_for()`` gives a fresh PostgreSQL database URL (or None)."""
    harness, harness_counted = harness_cost(
        calls=calls, rounds=rounds, concurrency=concurrency, model_group=MODEL_GROUP
    )
    counted_text = f", {harness_counted:,.0f} instructions" if harness_counted is not None else ""
    log(f"  the harness alone (subtracted below): {harness:.1f} µs CPU{counted_text} per call")
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "calls_per_round": calls,
        "rounds": rounds,
        "harness_cpu_us_per_call": r(harness, 1),
        "harness_instructions_per_call": round(harness_counted) if harness_counted is not None else None,
        "variants": {},
    }
    for name in names:
        database, settings = VARIANTS[name]
        url = f"sqlite:///{workdir / f'hooks-{name}.db'}" if database == "sqlite" else pg_url_for()
        if url is None:
            continue
        result = measure(
            name,
            url,
            settings,
            workdir,
            calls=calls,
            rounds=rounds,
            concurrency=concurrency,
            warmup=warmup,
            model_group=MODEL_GROUP,
        )
        figures = out["variants"][name] = result.summary(harness, harness_counted)
        counted = figures["plugin_instructions_per_call"]
        log(
            f"  {name}: plugin {figures['plugin_cpu_us_per_call']} µs CPU"
            + (f", {counted:,} instructions" if counted is not None else "")
            + " per call "
            f"(rounds, harness included: {figures['cpu_us_per_call_rounds']}), "
            f"{result.usage_events} usage events for {figures['calls_total']} calls, "
            + (
                f"journal fsyncs {figures['fsyncs_per_call']} per call "
                f"({figures['fsyncs_off_loop_per_call']} off the loop), "
                if figures["fsyncs_per_call"] is not None
                else ""
            )
            + f"audit {'ok' if result.audit_ok else 'FAILED'}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", metavar="REV", help="measure this commit's src/ (a git archive snapshot)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--calls", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions under valgrind (about 50x slower: use --calls 300 --rounds 3)",
    )
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", pg.DEFAULT_ADMIN_URL))
    args = parser.parse_args(argv)
    atexit.register(drop_snapshot)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    pg_there = pg.available(args.pg_url) is not None
    with ledger_bench.tempdir() as tmp, contextlib.ExitStack() as stack:

        def pg_url_for() -> str | None:
            return stack.enter_context(pg.temp_database(args.pg_url)) if pg_there else None

        out = run(
            Path(tmp),
            pg_url_for,
            names,
            calls=args.calls,
            rounds=args.rounds,
            concurrency=args.concurrency,
            warmup=args.warmup,
            log=lambda m: print(m, flush=True),
        )
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    from .snapshot import reexec_on_commit

    reexec_on_commit("bench.hooks_bench", sys.argv[1:])
    instructions.reexec_under_callgrind("bench.hooks_bench", sys.argv[1:])
    sys.exit(main())

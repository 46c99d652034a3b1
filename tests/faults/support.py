"""Shared pieces of the fault-injection tests: a slow fake upstream, proxy configs,
bounded call runners and direct reads of the ledger's tables."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from e2e.proxy import DIRECT_SETTLE_ENV, MASTER_KEY, RunningProxy, start_proxy  # noqa: F401  (re-exported)

REPO = Path(__file__).parents[2]
EXAMPLE_CATALOG = REPO / "examples" / "pricing.yaml"
MICRO = 1_000_000

# The catalog the fault tests' proxies run on: owned here, so tiers that grow monthly
# allocations or call quotas in examples/pricing.yaml do not change these tests' sums.
FAULT_CATALOG = """\
usd_per_credit: "0.001"
tiers:
  - code: pro
    name: Pro
    allowed_models: ["*"]
    default_markup: {kind: multiplier, value: "1.2"}
rules:
  - id: demo-2x
    model: "demo-*"
    kind: multiplier
    value: "2.0"
"""


def fault_catalog(workdir: Path, text: str = FAULT_CATALOG) -> Path:
    path = workdir / "pricing.yaml"
    path.write_text(text)
    return path


def granted(books: Any, account_id: int) -> int:
    """Everything ever granted to the account (purchases, and any allocation the ledger made)."""
    return sum(g.amount for g in books.grants(account_id))


# A catalog where every demo call costs exactly one cent (10 credits): a worst-case hold
# and the actual charge are then the same amount, so "N holds fit" means "N calls fit".
FLAT_CATALOG = """\
usd_per_credit: "0.001"
tiers:
  - code: pro
    name: Pro
    allowed_models: ["*"]
rules:
  - id: flat-cent
    model: "demo-*"
    kind: multiplier
    value: "1"
    min_charge_usd: "0.01"
"""

# -- a slow OpenAI-compatible upstream ------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when it closes
    delay = 0.3
    chunks = 12
    chunk_delay = 0.05

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        usage = {"prompt_tokens": 10, "completion_tokens": self.chunks, "total_tokens": 10 + self.chunks}
        created = int(time.time())
        base = {"id": f"chatcmpl-fake{time.monotonic_ns()}", "created": created, "model": "gpt-4o"}
        try:
            if not body.get("stream"):
                time.sleep(self.delay)
                payload = {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "word " * self.chunks},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            for i in range(self.chunks):
                time.sleep(self.chunk_delay)
                chunk = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": "word "}
                            if i == 0
                            else {"content": "word "},
                            "finish_reason": None,
                        }
                    ],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            final = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
            usage_chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            self.wfile.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def slow_upstream() -> Iterator[int]:
    """A local fake OpenAI upstream (0.3 s per call, streams of 12 chunks 50 ms apart); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def write_config(workdir: Path, upstream_port: int | None = None) -> Path:
    """A proxy config: the mock demo models, plus ``demo-slow`` on the fake upstream when given."""
    models = [
        {
            "model_name": "demo-fast",
            "litellm_params": {
                "model": "openai/gpt-4o",
                "api_key": "test-no-key",
                "mock_response": "Hello from the mock.",
            },
        }
    ]
    if upstream_port is not None:
        models.append(
            {
                "model_name": "demo-slow",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_key": "test-no-key",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                },
            }
        )
    config = {
        "model_list": models,
        "litellm_settings": {"callbacks": "credit_hooks.credits_callback", "num_retries": 0},
        "general_settings": {"custom_auth": "credit_hooks.auth.user_api_key_auth"},
    }
    path = workdir / "proxy_config.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def proxy_env(database_url: str, pricing_file: Path, **extra: str) -> dict[str, str]:
    env = {
        "CREDITS_DATABASE_URL": database_url,
        "CREDITS_PRICING_FILE": str(pricing_file),
        "CREDITS_UNKNOWN_ACCOUNTS": "refuse",
        "CREDITS_ACCOUNT_CACHE_SECONDS": "0",
        "CREDITS_SWEEP_INTERVAL_SECONDS": "1",
        **DIRECT_SETTLE_ENV,
    }
    env.update(extra)
    return env


# -- calls --------------------------------------------------------------------------


@dataclass
class CallResult:
    index: int
    stream: bool
    status: int | None = None  # None: no HTTP status reached the client
    complete: bool = False  # the whole response (a stream up to [DONE]) reached the client
    error_type: str | None = None
    message: str = ""
    started: float = 0.0
    ended: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def chat(
    client: httpx.Client,
    base_url: str,
    key: str,
    index: int,
    *,
    model: str = "demo-fast",
    stream: bool = False,
    body: Mapping[str, Any] | None = None,
) -> CallResult:
    """One chat call; never raises: what the client saw is in the result."""
    result = CallResult(index=index, stream=stream, started=time.monotonic())
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    if stream:
        payload.update(stream=True, stream_options={"include_usage": True})
    payload.update(body or {})
    headers = {"authorization": f"Bearer {key}"}
    try:
        if not stream:
            response = client.post(f"{base_url}/v1/chat/completions", json=payload, headers=headers)
            result.status = response.status_code
            _read_error(result, response.content)
            result.complete = response.status_code == 200 and bool(response.json().get("choices"))
        else:
            with client.stream(
                "POST", f"{base_url}/v1/chat/completions", json=payload, headers=headers
            ) as response:
                result.status = response.status_code
                if response.status_code != 200:
                    _read_error(result, response.read())
                else:
                    for line in response.iter_lines():
                        if line.strip() == "data: [DONE]":
                            result.complete = True
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.message = f"{type(exc).__name__}: {exc}"
    result.ended = time.monotonic()
    return result


def _read_error(result: CallResult, content: bytes) -> None:
    if result.status == 200:
        return
    try:
        error = json.loads(content).get("error", {})
    except (ValueError, AttributeError):
        result.message = content[:500].decode(errors="replace")
        return
    if isinstance(error, dict):
        result.error_type = error.get("type")
        result.message = str(error.get("message", ""))[:500]
    else:
        result.message = str(error)[:500]


def run_bounded(
    jobs: list[Callable[[], CallResult]], workers: int, deadline_seconds: float
) -> list[CallResult]:
    """Run ``jobs`` on ``workers`` threads; jobs not started by the deadline are not run."""
    results: list[CallResult] = []
    lock = threading.Lock()
    queue = list(reversed(jobs))
    stop_at = time.monotonic() + deadline_seconds

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                if not queue:
                    return
                job = queue.pop()
            outcome = job()
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, stop_at - time.monotonic() + 60))
    return sorted(results, key=lambda r: r.index)


def http_client(connections: int) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(60, connect=5),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


# -- the ledger's tables, read directly ----------------------------------------------

TABLES = ("accounts", "api_keys", "grants", "holds", "entries", "usage_events")


def snapshot(database_url: str) -> dict[str, Any]:
    """Row counts of every ledger table, every account's money, every hold's state."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            counts = {t: c.execute(text(f"select count(*) from {t}")).scalar_one() for t in TABLES}
            money = [
                tuple(r) for r in c.execute(text("select id, balance, held, debt from accounts order by id"))
            ]
            holds = [tuple(r) for r in c.execute(text("select id, status, charged from holds order by id"))]
            grants = [tuple(r) for r in c.execute(text("select id, remaining from grants order by id"))]
    finally:
        engine.dispose()
    return {"counts": counts, "money": money, "holds": holds, "grants": grants}


def open_holds(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            return int(c.execute(text("select count(*) from holds where status = 'open'")).scalar_one())
    finally:
        engine.dispose()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)

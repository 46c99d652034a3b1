"""Closed-loop HTTP load generator, run as its own process (``python -m bench.loadgen``).

N workers, each with one keep-alive HTTP/1.1 connection, send the same chat
completion back to back until the duration or the request cap runs out. It is
raw asyncio (no httpx): on a 2-core machine every CPU cycle the client spends is
one the proxy does not get, so the client is kept as cheap as possible and runs
in a separate process (pinned to the other core by ``bench``).

Prints one JSON object: ok, errors, elapsed_s, latencies_ms (every request),
charged (responses carrying ``x-credits-charged``), first_error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

REQUEST_TIMEOUT_S = 30.0


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers end with an empty line
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            body = await self.reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


def build_request(host: str, port: int, path: str, key: str, model: str, stream: bool) -> bytes:
    payload: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say ok."}],
        "max_tokens": 16,
    }
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def run(args: argparse.Namespace) -> dict[str, object]:
    raw = build_request(args.host, args.port, args.path, args.key, args.model, args.stream)
    latencies: list[float] = []
    state: dict[str, Any] = {"sent": 0, "errors": 0, "charged": 0, "first_error": ""}
    start = time.perf_counter()
    deadline = start + args.duration

    async def worker() -> None:
        conn = Conn(args.host, args.port)
        try:
            while time.perf_counter() < deadline and state["sent"] < args.max_requests:
                state["sent"] += 1
                t0 = time.perf_counter()
                try:
                    status, headers, body = await asyncio.wait_for(conn.request(raw), args.request_timeout)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as exc:
                    conn.close()
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(0.05)
                    continue
                took = (time.perf_counter() - t0) * 1000.0
                if status != 200:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or f"HTTP {status}: {body[:300]!r}"
                    continue
                latencies.append(took)
                if "x-credits-charged" in headers:
                    state["charged"] += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "ok": len(latencies),
        "errors": state["errors"],
        "elapsed_s": elapsed,
        "latencies_ms": latencies,
        "charged": state["charged"],
        "first_error": state["first_error"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", default="bench-gpt-4o")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S, help="seconds")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("the load generator only targets the loopback interface")
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()

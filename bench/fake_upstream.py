"""A tiny OpenAI-compatible upstream on 127.0.0.1 that answers at once.

Raw asyncio HTTP/1.1 (keep-alive, Content-Length or chunked request bodies), so
it costs as little CPU as possible and LiteLLM still makes a real HTTP call.

``POST /v1/chat/completions`` answers a fixed completion with a fixed usage
(10 prompt + 5 completion tokens); with ``"stream": true`` it answers
server-sent events whose last chunk carries the usage, then ``[DONE]``.
Anything else under ``/v1/models`` or ``/health`` answers a small JSON.

Run: ``python -m bench.fake_upstream --port 0`` prints ``PORT <n>`` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

PROMPT_TOKENS = 10
COMPLETION_TOKENS = 5
MODEL = "gpt-4o-2024-08-06"
USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
}


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok from the fake upstream"},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    ).encode()


def _chunk(delta: dict[str, object], finish: str | None, usage: bool) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = USAGE
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _stream_events() -> list[bytes]:
    return [
        _chunk({"role": "assistant", "content": ""}, None, False),
        _chunk({"content": "ok from "}, None, False),
        _chunk({"content": "the fake upstream"}, None, False),
        _chunk({}, "stop", False),
        _chunk({}, None, True),
        b"data: [DONE]\n\n",
    ]


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readline()
    length = int(headers.get("content-length", "0"))
    return await reader.readexactly(length) if length else b""


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            method, path, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await _read_body(reader, headers)
            if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                try:
                    stream = bool(json.loads(body or b"{}").get("stream"))
                except ValueError:
                    stream = False
                if stream:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
                    )
                    for event in _stream_events():
                        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(_response("200 OK", _completion()))
            elif path.startswith(("/v1/models", "/models", "/health")):
                writer.write(_response("200 OK", b'{"object":"list","data":[]}'))
            else:
                writer.write(_response("404 Not Found", b'{"error":{"message":"not found"}}'))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(_main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""Counts the full garbage collections of a proxy the bench starts (``BENCH_GC_STATS``).

On the ``PYTHONPATH`` of the proxies only. A full collection of a warmed-up LiteLLM
proxy takes 0.3-0.9 s on the bench machine and comes every thousand requests or so,
with the plugin or without it: one landing in a round moves that round's req/s by
several percent, so the bench reports how many each round had. Nothing else changes:
the collector runs as it would.
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

_PATH = os.environ.get("BENCH_GC_STATS")
_started: list[float] = []
_totals = {"full": 0, "seconds": 0.0}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _started[:] = [time.perf_counter()]
        return
    if not _started:
        return
    _totals["full"] += 1
    _totals["seconds"] += time.perf_counter() - _started[0]
    assert _PATH is not None
    temporary = f"{_PATH}.tmp"
    with open(temporary, "w") as out:
        json.dump(_totals, out)
    os.replace(temporary, _PATH)


if _PATH:
    gc.callbacks.append(_on_gc)


def _name_threads_for_the_kernel() -> None:
    """Python 3.11 leaves every thread of the proxy named after the program in
    /proc/<pid>/task/*/comm; with its Python name there (15 bytes: the kernel's limit),
    the bench can tell the journal's writer, the executor's workers and LiteLLM's threads
    apart when it reads their CPU time and context switches."""
    import ctypes
    import threading

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    pr_set_name = 15
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named_bootstrap(self: threading.Thread) -> None:
        libc.prctl(pr_set_name, self.name.encode(errors="replace")[:15], 0, 0, 0)
        bootstrap(self)

    threading.Thread._bootstrap_inner = named_bootstrap  # type: ignore[attr-defined]


if _PATH:
    _name_threads_for_the_kernel()

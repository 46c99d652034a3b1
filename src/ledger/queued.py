"""Draining a writer thread's queue into a batch (the group commit's and the journal's)."""

from __future__ import annotations

import queue
from typing import Any


def take_queued(
    source: queue.SimpleQueue[Any], batch: list[Any], limit: int, stop: object, skip: object = None
) -> bool:
    """Move what ``source`` holds now into ``batch``, up to ``limit`` items, without waiting.

    ``skip`` markers are dropped. Returns True when ``stop`` came: the batch is the last.
    """
    while len(batch) < limit:
        try:
            item = source.get_nowait()
        except queue.Empty:
            return False
        if item is stop:
            return True
        if skip is None or item is not skip:
            batch.append(item)
    return False

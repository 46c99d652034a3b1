"""An ``fdatasync`` that keeps the interpreter lock: for an event loop that waits for
its fsync itself and times it to judge the disk.

``os.fdatasync`` lets go of the interpreter lock for the call and takes it back after,
so the time around it also holds the wait for whichever thread ran Python meanwhile:
at concurrency 16 the journal's writer building a batch, or LiteLLM's threads, held it
for up to their 5 ms switch interval, and a 0.08 ms disk read as 0.5-2.6 ms. Kept through
the call, the time is the disk's. The other threads wait for the call: right for a
loop, which can do nothing else meanwhile; wrong for threads that share fsyncs by
writing their lines during one (``SettleJournal.record``), which let it go.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable


def _libc_fdatasync() -> Callable[[int], int] | None:
    try:
        # PyDLL: ctypes calls through it without releasing the interpreter lock
        function = ctypes.PyDLL(None, use_errno=True).fdatasync
    except (OSError, AttributeError):
        return None  # not a C library with fdatasync: os.fdatasync does
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_FDATASYNC = _libc_fdatasync()


def fdatasync_keeping_lock(fd: int) -> None:
    """``os.fdatasync(fd)`` without letting other threads run Python meanwhile."""
    if _FDATASYNC is None:
        os.fdatasync(fd)
        return
    while _FDATASYNC(fd) != 0:
        code = ctypes.get_errno()
        if code != errno.EINTR:  # retried, as os.fdatasync does (PEP 475)
            raise OSError(code, os.strerror(code))

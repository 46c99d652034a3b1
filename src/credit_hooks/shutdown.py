"""Apply the settle journal before the proxy process ends, also when a signal stops it.

A stopped proxy must leave nothing in its journal: on a disk that does not outlive the
process (a container's), what it leaves is lost. ``atexit`` is not enough. uvicorn
(0.29 and later) ends a server stopped by SIGTERM or SIGINT by raising the signal again
with its default action, which kills the process before any ``atexit`` handler runs,
so the last batch (up to ``CREDITS_JOURNAL_LINGER_MS`` of charges) would wait on disk
for the next start.

The last moment that code still runs is the end of the uvicorn server's own
``shutdown``: every request has finished by then and the lifespan has shut down. The
server is found through the SIGTERM handler it installs (its bound ``handle_exit``);
anything else (another server, a worker manager) leaves the ``atexit`` close alone.
"""

from __future__ import annotations

import inspect
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("credits.shutdown")

_HOOKED = "_credits_drains_at_shutdown"


def drain_at_server_shutdown(drain: Callable[[], None]) -> bool:
    """Run ``drain`` (blocking) when the uvicorn server serving this process has shut
    down; False when no such server is found (call from its event loop's thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if server is None or type(server).__module__ != "uvicorn.server":
        return False
    if getattr(server, _HOOKED, False):
        return True
    shutdown = getattr(server, "shutdown", None)
    if shutdown is None or not inspect.iscoroutinefunction(shutdown):
        return False

    async def shutdown_then_drain(*args: Any, **kwargs: Any) -> None:
        try:
            await shutdown(*args, **kwargs)
        finally:
            try:
                drain()  # nothing is served any more: blocking the loop costs nobody
            except Exception:
                log.exception(
                    "stopping the settle journal or escrows failed at shutdown: the next start "
                    "applies the journal, the sweeper releases the escrows when they expire"
                )

    server.shutdown = shutdown_then_drain
    setattr(server, _HOOKED, True)
    return True

"""What the PostgreSQL server itself did while a round ran: its CPU, its checkpoints.

The server shares the machine's cores with the proxy under test and the load generator,
and it does work no proxy's CPU figures show: the plugin's writes on behalf of a
PostgreSQL proxy, a checkpoint's writes in whichever round it lands. Sampling it around
every round (of every variant, the server being shared) tells a slow round caused by the
server from one caused by the proxy.

CPU comes from /proc, so it is there only when the server runs on this machine and its
processes can be read (``None`` otherwise): the postmaster's children that are alive
(backends, checkpointer, WAL writer, ...), plus what the postmaster has reaped from the
ones that exited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import psycopg

from . import pg, procs


class ServerSample(NamedTuple):
    cpu_s: float | None
    checkpoints: int
    buffers_written: int  # by checkpoints, the background writer and backends


class ServerWatch:
    def __init__(self, admin_url: str) -> None:
        self._conn = psycopg.connect(pg.libpq_url(admin_url), autocommit=True, connect_timeout=5)
        row = self._conn.execute("SELECT pg_backend_pid()").fetchone()
        self._postmaster = _parent(int(row[0])) if row else None

    def sample(self) -> ServerSample:
        row = self._conn.execute(
            "SELECT checkpoints_timed + checkpoints_req,"
            " buffers_checkpoint + buffers_clean + buffers_backend FROM pg_stat_bgwriter"
        ).fetchone()
        checkpoints, written = (int(row[0]), int(row[1])) if row else (0, 0)
        return ServerSample(self._cpu_seconds(), checkpoints, written)

    def _cpu_seconds(self) -> float | None:
        if self._postmaster is None:
            return None
        try:
            fields = procs.stat_fields(Path(f"/proc/{self._postmaster}/stat"))
        except OSError:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        # utime, stime, then cutime, cstime: the exited children it has waited for
        ticks = sum(int(f) for f in fields[11:15])
        return ticks / tick + procs.cpu_seconds_of(procs.descendants(self._postmaster))

    def close(self) -> None:
        self._conn.close()


def difference(before: ServerSample, after: ServerSample) -> dict[str, float | int | None]:
    cpu = None if before.cpu_s is None or after.cpu_s is None else after.cpu_s - before.cpu_s
    return {
        "pg_cpu_s": cpu,
        "pg_checkpoints": after.checkpoints - before.checkpoints,
        "pg_buffers_written": after.buffers_written - before.buffers_written,
    }


def _parent(pid: int) -> int | None:
    """The postmaster: the parent of our own backend, when /proc shows it."""
    try:
        return int(procs.stat_fields(Path(f"/proc/{pid}/stat"))[1])
    except (OSError, IndexError, ValueError):
        return None

"""The benchmark's view of the PostgreSQL server: its CPU and checkpoints between samples."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from bench.pg_server import ServerWatch, difference

from bench import pg

pytestmark = pytest.mark.postgres


@pytest.fixture
def watch(pg_url: str) -> Iterator[ServerWatch]:
    server = ServerWatch(pg_url)
    yield server
    server.close()


def test_work_done_by_the_server_shows_as_its_cpu_and_a_checkpoint_as_one(
    watch: ServerWatch, pg_url: str
) -> None:
    before = watch.sample()
    assert before.cpu_s is not None, "the server runs on this machine: its processes are in /proc"
    # another connection's backend: its CPU is the server's, whether or not it has exited
    with psycopg.connect(pg.libpq_url(pg_url), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)")
        conn.execute("CHECKPOINT")
    # the checkpointer reports its count once it has finished, and the postmaster adds
    # an exited backend's CPU to its own children's once it has reaped it
    deadline = time.monotonic() + 10
    while True:
        done = difference(before, watch.sample())
        cpu = done["pg_cpu_s"]
        assert cpu is not None
        if (cpu > 0.05 and done["pg_checkpoints"]) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert cpu > 0.05
    assert done["pg_checkpoints"] >= 1  # a timed one may have ended meanwhile
    assert done["pg_buffers_written"] > 0


def test_a_quiet_server_adds_next_to_nothing(watch: ServerWatch) -> None:
    done = difference(watch.sample(), watch.sample())
    cpu = done["pg_cpu_s"]
    assert cpu is not None and 0 <= cpu < 0.05

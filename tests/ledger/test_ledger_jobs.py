"""Job leases: one replica runs a periodic job; the others get None."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from ledger_testlib import sqlite_only
from test_ledger_concurrency import run_together

from ledger import Ledger
from pricing.errors import InvalidOperation


@pytest.fixture
def race_ledger(db_url: str) -> Iterator[Ledger]:
    book = Ledger(db_url, pool_size=20, max_overflow=5, pool_timeout=60)
    book.create_schema()
    try:
        yield book
    finally:
        book.dispose()


def test_racing_replicas_run_the_job_once(race_ledger: Ledger) -> None:
    runs: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> int:
        with lock:
            runs.append(i)
        time.sleep(0.3)  # long enough for every other replica to try meanwhile
        return i

    results = run_together(20, lambda i: race_ledger.run_exclusive("sweep", lambda: job(i)))
    assert len(runs) == 1
    assert [r for r in results if r is not None] == runs


def test_lease_is_given_back_when_the_job_ends(ledger: Ledger) -> None:
    assert ledger.run_exclusive("sweep", lambda: "first") == "first"
    assert ledger.run_exclusive("sweep", lambda: "second") == "second"


@sqlite_only
def test_lease_is_given_back_when_the_job_raises(ledger: Ledger) -> None:
    def boom() -> None:
        raise RuntimeError("job failed")

    with pytest.raises(RuntimeError):
        ledger.run_exclusive("sweep", boom)
    assert ledger.run_exclusive("sweep", lambda: 1) == 1


def test_held_lease_blocks_until_it_runs_out(db_url: str) -> None:
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    book = Ledger(db_url, clock=lambda: now[0])
    book.create_schema()
    try:
        assert book.run_exclusive("daily", lambda: 1, lease_seconds=60, keep_lease=True) == 1
        # Another job name is independent; the same name waits for the lease to run out.
        assert book.run_exclusive("other", lambda: 2) == 2
        now[0] += timedelta(seconds=59)
        assert book.run_exclusive("daily", lambda: 3) is None
        now[0] += timedelta(seconds=1)
        assert book.run_exclusive("daily", lambda: 4) == 4
    finally:
        book.dispose()


@sqlite_only
def test_nested_call_sees_the_lease_taken(ledger: Ledger) -> None:
    assert ledger.run_exclusive("sweep", lambda: ledger.run_exclusive("sweep", lambda: "inner")) is None


@sqlite_only
def test_bad_lease_arguments(ledger: Ledger) -> None:
    with pytest.raises(InvalidOperation):
        ledger.run_exclusive("", lambda: 1)
    with pytest.raises(InvalidOperation):
        ledger.run_exclusive("x", lambda: 1, lease_seconds=0)

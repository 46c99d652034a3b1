"""Group commit (``ledger.batch``): many callers, one transaction, each caller its own outcome.

To put several operations in ONE batch on purpose, the writer is first kept busy by a
gate operation; everything submitted meanwhile is queued, and the next batch takes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from ledger_testlib import USAGE, funded
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from ledger import Hold, Ledger, Settlement
from ledger.batch import GroupCommitter
from pricing.errors import BillingUnavailable, InsufficientCredits

X = 1_000


@pytest.fixture
def book(db_url: str) -> Iterator[Ledger]:
    ledger = Ledger(db_url, pool_size=10, group_commit=True)
    ledger.create_schema()
    try:
        yield ledger
        assert ledger.audit() == []
    finally:
        ledger.dispose()


def writer(ledger: Ledger) -> GroupCommitter:
    committer = ledger.group_commit
    assert committer is not None
    return committer


class OneBatch:
    """Queue calls behind a gate so that the writer's next batch holds all of them, in order."""

    def __init__(self, ledger: Ledger) -> None:
        self.committer = writer(ledger)
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.gate = threading.Event()
        self.gated = self.pool.submit(self.committer.submit, lambda _conn: self.gate.wait(30))
        self._wait_queued(0)  # the writer took the gate: it is running it now
        self.calls: list[Future[Any]] = []

    def _wait_queued(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while self.committer._queue.qsize() != n:
            assert time.monotonic() < deadline, "the call never reached the writer's queue"
            time.sleep(0.001)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        self.calls.append(self.pool.submit(fn))
        self._wait_queued(len(self.calls))
        return self.calls[-1]

    def run(self) -> list[Any]:
        batches = self.committer.batches
        self.gate.set()
        self.gated.result(10)
        outcomes: list[Any] = []
        for call in self.calls:
            try:
                outcomes.append(call.result(30))
            except Exception as error:
                outcomes.append(error)
        self.pool.shutdown()
        assert self.committer.batches == batches + 2, "the calls did not share one batch"
        return outcomes


def duplicate_usage_event(hold_id: str) -> Callable[[Connection], Any]:
    """An operation that raises IntegrityError: a second usage event for a settled hold."""

    def op(conn: Connection) -> Any:
        conn.execute(
            text(
                "INSERT INTO usage_events (hold_id, account_id, model, provider, call_type, tokens_in,"
                " tokens_out, provider_cost_usd, charged, cache_hit, stream, created_at, byok)"
                " SELECT id, account_id, 'm', 'p', 'c', 0, 0, 0, 0, false, false, created_at, false"
                " FROM holds WHERE id = :id"
            ),
            {"id": hold_id},
        )

    return op


def test_a_failing_operation_does_not_sink_its_batch(book: Ledger) -> None:
    rich = funded(book, 100 * X)
    poor = funded(book, 2 * X, external_id="bob")
    settled = book.hold(rich, X, ttl_seconds=60)
    first = book.settle(settled.id, X, USAGE)
    open_hold = book.hold(rich, 5 * X, ttl_seconds=60)

    batch = OneBatch(book)
    before = batch.call(lambda: book.hold(poor, X, ttl_seconds=60))
    broken = batch.call(lambda: batch.committer.submit(duplicate_usage_event(settled.id)))
    too_much = batch.call(lambda: book.hold(poor, 2 * X, ttl_seconds=60))  # 1 X left after `before`
    again = batch.call(lambda: book.settle(settled.id, X, USAGE))
    charge = batch.call(lambda: book.settle(open_hold.id, 3 * X, USAGE))
    twice = batch.call(lambda: book.settle(open_hold.id, 3 * X, USAGE))
    after = batch.call(lambda: book.hold(poor, X, ttl_seconds=60))
    outcomes = dict(zip([before, broken, too_much, again, charge, twice, after], batch.run(), strict=True))

    assert isinstance(outcomes[broken], IntegrityError)
    assert isinstance(outcomes[too_much], InsufficientCredits)
    assert isinstance(outcomes[before], Hold) and isinstance(outcomes[after], Hold)
    assert outcomes[again] == first
    assert isinstance(outcomes[charge], Settlement) and outcomes[charge].charged == 3 * X
    assert outcomes[twice] == outcomes[charge]
    # Everything but the failed operation was committed, exactly once.
    b = book.balance(poor)
    assert (b.balance, b.held) == (2 * X, 2 * X)
    r = book.balance(rich)
    assert (r.balance, r.held) == (96 * X, 0)
    assert len(book.usage(rich)) == 2


def test_holds_in_one_batch_never_pass_the_limit(book: Ledger) -> None:
    acc = funded(book, 5 * X, overdraft_limit=X)
    batch = OneBatch(book)
    for _ in range(10):
        batch.call(lambda: book.hold(acc, X, ttl_seconds=60))
    outcomes = batch.run()
    assert [isinstance(o, Hold) for o in outcomes] == [True] * 6 + [False] * 4
    assert all(isinstance(o, InsufficientCredits) for o in outcomes[6:])
    assert book.balance(acc).available == -X


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_dead_writer_connection_fails_every_caller_of_the_batch(book: Ledger) -> None:
    acc = funded(book, 100 * X)
    batch = OneBatch(book)
    batch.call(lambda: book.hold(acc, X, ttl_seconds=60))
    batch.call(
        lambda: batch.committer.submit(
            lambda conn: conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        )
    )
    batch.call(lambda: book.hold(acc, 2 * X, ttl_seconds=60))
    outcomes = batch.run()
    assert all(isinstance(o, BillingUnavailable) for o in outcomes), outcomes
    # None of it was committed, and the next call gets a fresh connection.
    assert book.balance(acc).held == 0
    hold = book.hold(acc, X, ttl_seconds=60)
    book.settle(hold.id, X, USAGE)
    assert book.balance(acc).balance == 99 * X


def test_dispose_stops_the_writer(db_url: str) -> None:
    ledger = Ledger(db_url, group_commit=True)
    ledger.create_schema()
    acc = funded(ledger, 10 * X)
    hold = ledger.hold(acc, X, ttl_seconds=60)
    ledger.settle(hold.id, X, USAGE)
    committer = writer(ledger)
    batches = committer.batches
    ledger.dispose()
    assert not committer._thread.is_alive()
    # Used after dispose (as a ledger without group commit can be): it runs unbatched.
    again = ledger.hold(acc, X, ttl_seconds=60)
    ledger.settle(again.id, X, USAGE)
    assert committer.batches == batches
    assert ledger.audit() == []
    ledger.dispose()


def test_group_commit_is_off_by_default(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        assert ledger.group_commit is None
    finally:
        ledger.dispose()

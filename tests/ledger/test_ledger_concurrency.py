"""Real concurrency: many threads, each with its own pooled connection.

PostgreSQL is the one that matters (two proxies, one database); SQLite runs the
same races to prove BEGIN IMMEDIATE serializes its writers.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from ledger_testlib import USAGE, funded

from ledger import Hold, Ledger, Settlement
from pricing.errors import InsufficientCredits

X = 1_000  # µcr per hold
WORKERS = 50

T = TypeVar("T")


@pytest.fixture(params=[False, True], ids=["one-commit-each", "group-commit"])
def race_ledger(db_url: str, request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """Every race runs twice: one transaction per call, and group commit (``ledger.batch``)."""
    book = Ledger(db_url, pool_size=WORKERS, max_overflow=5, pool_timeout=60, group_commit=request.param)
    book.create_schema()
    try:
        yield book
        assert book.audit() == []
    finally:
        book.dispose()


def run_together(n: int, task: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``task(i)`` for i < n on WORKERS threads released at the same instant."""
    start = threading.Event()

    def call(i: int) -> T | BaseException:
        start.wait()
        try:
            return task(i)
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(call, i) for i in range(n)]
        start.set()
        return [f.result() for f in futures]


class AvailableWatcher:
    """Samples the account's available balance while a race runs; keeps the lowest seen."""

    def __init__(self, ledger: Ledger, account_id: int) -> None:
        self.ledger = ledger
        self.account_id = account_id
        self.lowest: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            available = self.ledger.balance(self.account_id).available
            self.lowest = available if self.lowest is None else min(self.lowest, available)

    def __enter__(self) -> AvailableWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize(("overdraft_holds", "expected"), [(0, 50), (10, 60)])
def test_concurrent_holds_never_overspend(race_ledger: Ledger, overdraft_holds: int, expected: int) -> None:
    overdraft = overdraft_holds * X
    acc = funded(race_ledger, 50 * X, overdraft_limit=overdraft)

    with AvailableWatcher(race_ledger, acc) as watcher:
        results = run_together(200, lambda i: race_ledger.hold(acc, X, ttl_seconds=60, reference=f"r{i}"))

    held = [r for r in results if isinstance(r, Hold)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    unexpected = [r for r in results if not isinstance(r, Hold | InsufficientCredits)]
    assert unexpected == []
    assert (len(held), len(refused)) == (expected, 200 - expected)
    assert len({h.id for h in held}) == expected

    b = race_ledger.balance(acc)
    assert (b.balance, b.held, b.available) == (50 * X, expected * X, -overdraft)
    assert watcher.lowest is not None and watcher.lowest >= -overdraft
    assert race_ledger.audit() == []


def test_concurrent_settles_of_one_hold_charge_once(race_ledger: Ledger) -> None:
    acc = funded(race_ledger, 100 * X)
    hold = race_ledger.hold(acc, 10 * X, ttl_seconds=60)

    results = run_together(20, lambda _: race_ledger.settle(hold.id, 7 * X, USAGE))

    assert all(isinstance(r, Settlement) for r in results), [
        r for r in results if not isinstance(r, Settlement)
    ]
    assert len(set(results)) == 1
    b = race_ledger.balance(acc)
    assert (b.balance, b.held) == (93 * X, 0)
    assert len(race_ledger.usage(acc)) == 1
    assert Counter(e.kind for e in race_ledger.history(acc, limit=100)) == Counter(
        {"grant": 1, "hold": 1, "release": 1, "charge": 1}
    )


def test_settle_racing_void_and_sweeper_charges_once(race_ledger: Ledger) -> None:
    acc = funded(race_ledger, 1000 * X)
    holds = [race_ledger.hold(acc, X, ttl_seconds=60) for _ in range(30)]

    def task(i: int) -> object:
        hold = holds[i // 3]
        if i % 3 == 0:
            return race_ledger.settle(hold.id, 2 * X, USAGE)
        if i % 3 == 1:
            return race_ledger.void(hold.id, "failure event")
        return race_ledger.settle(hold.id, 2 * X, USAGE)

    results = run_together(90, task)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(race_ledger.usage(acc, limit=100)) == 30
    b = race_ledger.balance(acc)
    assert (b.balance, b.held) == (1000 * X - 30 * 2 * X, 0)


def test_mixed_traffic_keeps_the_books(race_ledger: Ledger) -> None:
    accounts = [funded(race_ledger, 20 * X, external_id=f"user-{n}", overdraft_limit=X) for n in range(4)]

    def task(i: int) -> None:
        rng = random.Random(i)
        acc = accounts[i % len(accounts)]
        for step in range(6):
            roll = rng.random()
            if roll < 0.15:
                race_ledger.grant(
                    acc, rng.randint(1, 5 * X), source="purchase", external_ref=f"p-{acc}-{i // 4 % 3}-{step}"
                )
                continue
            try:
                hold = race_ledger.hold(acc, rng.randint(0, 3 * X), ttl_seconds=60)
            except InsufficientCredits:
                continue
            if roll < 0.8:
                race_ledger.settle(hold.id, rng.randint(0, 4 * X), USAGE)
            else:
                race_ledger.void(hold.id)

    results = run_together(100, task)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert race_ledger.audit() == []
    for acc in accounts:
        assert race_ledger.balance(acc).held == 0

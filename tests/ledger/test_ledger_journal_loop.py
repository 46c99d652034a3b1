"""Journaled charges recorded from an event loop: on disk before they return, with the
calls waiting together sharing one fsync off the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from ledger_testlib import CR, USAGE, fake_fsyncs, funded, sqlite_only

from ledger import Ledger
from ledger.journal import SettleJournal, WrittenLine
from ledger.journal_loop import LoopRecorder
from ledger.outbox import PendingCharge
from pricing.errors import BillingUnavailable

T = TypeVar("T")


@pytest.fixture
def journal(ledger: Ledger, tmp_path: Path) -> Iterator[SettleJournal]:
    book = SettleJournal(ledger, tmp_path / "journal", fast_sync_seconds=0.0)
    yield book
    book.close()


@pytest.fixture
def recorder(journal: SettleJournal) -> Iterator[LoopRecorder]:
    pool = ThreadPoolExecutor(4)
    yield LoopRecorder(journal, pool)
    pool.shutdown()


class _SlowDisk:
    """The journal's fsyncs taking 5 ms (a busy disk: the calls arriving meanwhile wait for
    the next one), failing while ``broken``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.broken = False
        self._real = fake_fsyncs(monkeypatch, self)

    def __call__(self, fd: int) -> None:
        time.sleep(0.005)
        if self.broken:
            raise OSError(5, "Input/output error")
        self._real(fd)


def _charges(ledger: Ledger, account: int, count: int) -> list[PendingCharge]:
    return [
        PendingCharge(ledger.hold(account, 5_000, ttl_seconds=60).id, 1_000, USAGE, account_id=account)
        for _ in range(count)
    ]


def _in_a_thread(work: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
    """``asyncio.run(work())`` where a loop that never yields cannot hang the suite."""
    results: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(work()))
        except BaseException as error:  # handed to the test
            failure.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the event loop did not finish within {timeout}s"
    if failure:
        raise failure[0]
    return results[0]


def test_calls_waiting_together_share_fsyncs_and_each_is_on_disk_when_it_returns(
    ledger: Ledger, journal: SettleJournal, recorder: LoopRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(ledger, 100 * CR)
    charges = _charges(ledger, account, 64)
    _SlowDisk(monkeypatch)
    returned: list[tuple[WrittenLine, bool]] = []

    async def one(charge: PendingCharge) -> None:
        line = await recorder.record(charge)
        returned.append((line, journal.on_disk(line)))

    async def everything() -> None:
        await asyncio.gather(*(one(c) for c in charges))

    _in_a_thread(everything)
    assert len(returned) == 64 and all(on_disk for _, on_disk in returned)
    assert journal.stats.recorded == 64
    assert journal.stats.fsyncs <= 8  # one round trip per fsync, not per call
    assert journal.flush(10)
    assert ledger.balance(account).balance == 100 * CR - 64 * 1_000
    assert len(ledger.usage(account, limit=100)) == 64


@sqlite_only
def test_a_line_written_as_the_last_fsync_ended_gets_one_of_its_own(
    ledger: Ledger, journal: SettleJournal, recorder: LoopRecorder
) -> None:
    """Calls that keep arriving while fsyncs end: a line written after an fsync began is
    never taken as covered by it (the loop would spin on the finished fsync for good)."""
    account = funded(ledger, 100 * CR)
    charges = _charges(ledger, account, 400)

    async def worker(mine: list[PendingCharge]) -> None:
        for charge in mine:
            line = await recorder.record(charge)
            assert journal.on_disk(line)
            for _ in range(3):  # other work of the loop's: steps queued beside the fsync's end
                await asyncio.sleep(0)

    async def everything() -> None:
        await asyncio.gather(*(worker(charges[i::16]) for i in range(16)))

    _in_a_thread(everything)
    assert journal.stats.recorded == 400
    assert journal.flush(10)
    assert ledger.balance(account).balance == 100 * CR - 400 * 1_000


@sqlite_only
def test_a_failed_fsync_reaches_every_call_waiting_on_it_and_the_next_one_retries(
    ledger: Ledger, journal: SettleJournal, recorder: LoopRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(ledger, 100 * CR)
    charges = _charges(ledger, account, 9)
    disk = _SlowDisk(monkeypatch)
    disk.broken = True

    async def everything() -> list[WrittenLine | BaseException]:
        return await asyncio.gather(*(recorder.record(c) for c in charges[:8]), return_exceptions=True)

    outcomes = _in_a_thread(everything)
    assert len(outcomes) == 8
    for outcome in outcomes:
        assert isinstance(outcome, BillingUnavailable)
        assert "Input/output error" in str(outcome) and str(journal.directory) in str(outcome)
    assert journal.stats.recorded == 0  # none handed to the writer: the callers keep them
    disk.broken = False
    line = _in_a_thread(lambda: recorder.record(charges[8]))
    assert journal.on_disk(line)
    assert journal.stats.recorded == 1


def test_on_a_quick_disk_the_calls_of_one_pass_of_the_loop_share_one_fsync_on_it(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(ledger, 100 * CR)
    charges = _charges(ledger, account, 16)
    quick = SettleJournal(ledger, tmp_path / "quick", fast_sync_seconds=1.0)
    pool = ThreadPoolExecutor(4)
    recorder = LoopRecorder(quick, pool)
    synced_on: list[threading.Thread] = []

    def fdatasync(fd: int) -> None:
        synced_on.append(threading.current_thread())
        real(fd)

    real = fake_fsyncs(monkeypatch, fdatasync)
    returned: list[bool] = []

    async def one(charge: PendingCharge) -> None:
        line = await recorder.record(charge)
        returned.append(quick.on_disk(line))

    async def everything() -> threading.Thread:
        await asyncio.gather(*(one(c) for c in charges))  # sixteen success events at once
        return threading.current_thread()

    try:
        loop_thread = _in_a_thread(everything)
        assert returned == [True] * 16
        assert synced_on == [loop_thread]  # one fsync, on the loop: no thread hand-off
        assert quick.stats.fsyncs == 1 and quick.stats.recorded == 16
        assert quick.flush(10)
        assert ledger.balance(account).balance == 100 * CR - 16 * 1_000
    finally:
        quick.close()
        pool.shutdown()


@sqlite_only
def test_a_call_alone_on_the_loop_waits_for_a_slow_disks_fsync_itself(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(ledger, 100 * CR)
    charges = _charges(ledger, account, 4)
    # every disk is slower than this: judged slow from the timings at open on
    slow = SettleJournal(ledger, tmp_path / "slow", fast_sync_seconds=1e-9)
    never = SettleJournal(ledger, tmp_path / "never", fast_sync_seconds=0.0)
    pool = ThreadPoolExecutor(4)
    synced_on: list[str] = []

    def fdatasync(fd: int) -> None:
        synced_on.append(threading.current_thread().name)
        real(fd)

    real = fake_fsyncs(monkeypatch, fdatasync)

    async def one_at_a_time() -> str:
        recorder = LoopRecorder(slow, pool)
        for charge in charges[:3]:
            line = await recorder.record(charge, alone=True)  # nothing else to do meanwhile
            assert slow.on_disk(line)
        await recorder.record(charges[3])  # other calls in flight: the loop goes on
        return threading.current_thread().name

    async def never_on_the_loop() -> None:
        await LoopRecorder(never, pool).record(_charges(ledger, account, 1)[0], alone=True)

    try:
        assert not slow.syncs_fast()
        loop_thread = _in_a_thread(one_at_a_time)
        assert synced_on[:3] == [loop_thread] * 3
        assert len(synced_on) == 4 and synced_on[3] != loop_thread
        assert slow.stats.fsyncs == 4 and slow.stats.fsyncs_handed_off == 1
        _in_a_thread(never_on_the_loop)  # CREDITS_JOURNAL_LOOP_SYNC_MS=0 means never
        assert never.stats.fsyncs_handed_off == never.stats.fsyncs == 1
        assert slow.flush(10) and never.flush(10)
        assert ledger.balance(account).balance == 100 * CR - 5 * 1_000
    finally:
        slow.close()
        never.close()
        pool.shutdown()

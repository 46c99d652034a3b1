"""Recording journaled charges from an event loop, whatever the disk's speed.

``SettleJournal.record`` blocks its thread for an fsync. While the journal's fsyncs are
quick the loop waits for them itself; slow ones (a busy or network disk) must not stall
the loop, and handing every charge to a thread and back cost about 0.1 ms of
CPU per call. Here the loop writes the line itself (a ``pwrite`` into space reserved
ahead: microseconds), and the calls waiting at the same time share one fsync run on the
executor: one thread round trip per fsync, however many charges it covers.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from .journal import SettleJournal, WrittenLine
from .outbox import PendingCharge


class LoopRecorder:
    """``SettleJournal.record`` for coroutines of one event loop: same promise, on disk
    before it returns. A quick disk's fsync is waited for on the loop itself (a thread
    hand-off each way costs more); a slow one's off it, shared by the calls waiting."""

    def __init__(self, journal: SettleJournal, executor: Executor) -> None:
        self.journal = journal
        self._executor = executor
        self._sync: asyncio.Future[None] | None = None  # the latest fsync started off the loop

    async def record(self, charge: PendingCharge, *, alone: bool = False) -> WrittenLine:
        """Returns the charge's line, on disk by then. Raises ``BillingUnavailable`` when
        the line cannot be written or synced: the caller then still has the charge in
        hand (as with ``SettleJournal.record``).

        ``alone``: no other call is in flight on this loop, so it has nothing to do
        while the fsync runs, and waits for it itself however slow the disk: the pool
        would only add a hand-off each way. At one call at a time on a disk judged slow
        (0.25 ms at the median under load, 1.6 at p99), 979 of 1,292 fsyncs had gone to
        the pool and its thread switched 7.8 times per request."""
        journal = self.journal
        # asked once: while the disk is slow, a yes is a probe
        here = (alone and journal.loop_may_sync and not journal.syncing) or journal.syncs_fast()
        line = journal.write(charge)
        if here:
            # One step aside, so that the tasks this pass of the loop runs anyway (at c=16,
            # other calls' success events) write their lines first: the first of them back
            # fsyncs them all, on the loop. Without it every charge had an fsync of its own
            # (80-150 us of the loop's time, 60 of the kernel's CPU).
            await asyncio.sleep(0)
            if not journal.on_disk(line) and not journal.syncing:
                journal.sync_on_loop(line)
        loop = asyncio.get_running_loop()
        while not journal.on_disk(line):
            sync = self._sync
            # a sync that ended before this line was written cannot cover it (and awaiting
            # a done future would not yield: this loop would spin); one of another event
            # loop (a test's earlier asyncio.run) cannot be awaited here
            if sync is None or sync.done() or sync.get_loop() is not loop:
                # an fsync covers every line written before it starts, not just this one
                sync = self._sync = loop.run_in_executor(self._executor, journal.sync_to, line)
            # shielded: a waiter cancelled must not cancel the others' fsync
            await asyncio.shield(sync)
        journal.accept(line, charge)
        return line

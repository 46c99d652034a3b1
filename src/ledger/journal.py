"""The settle journal: a charge is durable on local disk first, in the ledger soon after.

Opt-in (``CREDITS_SETTLE_MODE=journal``). ``record`` appends the charge as one JSON line
to the current segment file and returns once an ``fdatasync`` covers it: the charge is
then on disk before the client has the end of its response, as the outbox promised
for the outage case. A writer thread applies the recorded charges to the ledger in
batches, many per transaction (``settle_batch``: a few set-based statements and one
pass over a hot account's row for the whole batch; the commit does not wait for the
WAL flush, since the lines stay here until checked), and deletes a full segment once
a sync point has flushed every batch and each of its charges is found in the ledger.

Why it is safe:

- Applying is idempotent by hold id (``settle`` returns the first settlement of a hold;
  ``settle_unheld`` and ``settle_escrowed`` insert the call's hold row with ON CONFLICT
  DO NOTHING), so a line applied twice (a crash between the commit and the segment's
  deletion) is charged once. At start, ``recover`` applies every segment a previous
  process left behind, before new charges are recorded.
- Concurrent ``record`` calls share fsyncs (group commit on the file): a line written
  before someone else's fsync began is covered by it, and its caller returns then.
- Until a charge is applied, its hold stays open in the ledger and keeps the worst case
  reserved, so the account can never spend the difference: the ledger is only ever
  more cautious than the truth, by at most the charges in flight (milliseconds).
- A batch the database refuses as a whole (an outage) is retried with backoff, never
  dropped. A charge the ledger refuses for good (its account is gone) is logged at
  CRITICAL and dropped, like the outbox does.

What changes for readers: a balance read right after a response may not show that
response's charge yet (the writer waits up to ``linger_seconds``, ``LINGER_SECONDS`` by
default, to fill a batch, then applies it); the headers of the response carry the figures
computed from the hold.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pricing.errors import AccountNotFound, BillingUnavailable, CreditsError, HoldNotFound

from . import journal_dirs, settle_batch, settle_batch_function
from .disk_sync import fdatasync_keeping_lock
from .outbox import Outbox, PendingCharge, apply_one
from .queued import take_queued
from .service import Ledger
from .settle_function import NEEDS_BURN_LOOP, Unavailable

log = logging.getLogger("credits.journal")

MAX_BATCH = 256
# A batch costs its statements whatever its size, and the writer holds the interpreter
# lock while it builds them, so a request being served waits: with one call at a time
# (some four charges per 50 ms) a 250 ms linger instead of 50 cut the proxy's added CPU
# per call from +1.1-1.8 to +0.5-0.7 ms. The price is the ledger's read-your-writes lag.
LINGER_SECONDS = 0.25
SEGMENT_LINES = 50_000
# Lines are written into space reserved ahead of them: an fdatasync of an append that
# grows the file also commits its new size to the filesystem's journal, which took a
# quarter of a one-thread cycle (0.14 against 0.10 ms here), more under load.
PREALLOCATE_BYTES = 4 << 20
# A caller on an event loop may wait for the fsync on the loop itself while the disk
# syncs faster than this (``syncs_fast``). A hand-off to a thread and back costs more
# than its 0.1 ms on a busy proxy: the thread then needs the interpreter lock twice
# from a loop that holds it. At 16 calls at a time on the benchmark's 2-core VM, the
# loop's own fsyncs read 0.45-0.66 ms (the disk alone: 0.15), so a 0.5 ms bound sent
# 97 % of them off the loop, at +0.94 ms of CPU and +8.8 context switches per request
# over the proxy without the plugin; with every fsync on the loop, +0.23 ms and +2.3
# (PostgreSQL: +2.02 against +1.51 ms). A network volume's (several ms) stays off it.
FAST_SYNC_SECONDS = 0.002
# Only fsyncs a caller waited for on its own thread say how fast the disk is. One run on
# a pool for an event loop is timed until that thread has the interpreter lock back,
# which a busy loop holds for up to its switch interval (5 ms): timing those too had
# made a 0.09 ms disk look like 0.6-1.4 ms, and 98 % of the charges of the hooks bench
# at c=16 went off the loop. The loop's own fsync keeps the lock (``sync_on_loop``,
# ``disk_sync``): with ``os.fdatasync`` the writer building a batch, or LiteLLM's
# threads, took it meanwhile, a 0.08 ms disk read 0.5-2.6 ms several times running,
# and at c=16 0.92-0.99 of the hooks bench's fsyncs still went to the pool (0.37-0.53
# with the lock kept). A disk's own fsyncs vary too (0.25 ms at the median, 0.55 at
# p90 and 1.6 at p99 on a busy day of the bench host), so it is judged by the low end
# of the last few: the third quickest of nine (``_DISK_RANK``), so that neither one
# quick fsync of a slow disk decides nor a few slow ones of a quick disk.
_SYNC_WINDOW = 9
_DISK_RANK = 2
_CALIBRATION_SYNCS = 3  # timed when the journal opens, before any caller can wait
# while the disk looks slow, one caller in this many seconds waits on its own thread
# anyway: the only way to see that it got quick again
PROBE_SECONDS = 1.0
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0
_STOP = object()
_HURRY = object()  # flush() is waiting: stop lingering, apply what is there
_FLUSH_NUDGE_SECONDS = 0.01


@dataclass(slots=True)
class _Segment:
    path: Path
    recorded: int = 0
    applied: int = 0
    sealed: bool = False
    offset: int = 0  # where the next line is written
    allocated: int = 0  # bytes reserved on disk ahead of the lines (0: none)


@dataclass(frozen=True, slots=True)
class WrittenLine:
    """A charge's line in the journal: ``number`` counts every line this journal wrote."""

    segment: _Segment
    number: int
    text: bytes  # the line as written: the writer hands it to the database as it is


@dataclass(slots=True)
class JournalStats:
    """Figures for the benchmark and the logs."""

    recorded: int = 0
    applied: int = 0
    dropped: int = 0
    batches: int = 0
    batches_in_function: int = 0  # booked by ``settle_batch_function`` (PostgreSQL)
    fsyncs: int = 0
    fsyncs_handed_off: int = 0  # run for a caller waiting on another thread (``sync_to``)
    retries: int = 0
    last_error: str = field(default="")


class SettleJournal:
    """Durable charges on local disk, applied to ``ledger`` in batches by one thread."""

    def __init__(
        self,
        ledger: Ledger,
        directory: Path,
        *,
        max_batch: int = MAX_BATCH,
        segment_lines: int = SEGMENT_LINES,
        linger_seconds: float = LINGER_SECONDS,
        fast_sync_seconds: float = FAST_SYNC_SECONDS,
    ) -> None:
        if max_batch < 1 or segment_lines < 1:
            raise ValueError("max_batch and segment_lines must be >= 1")
        self._fast_sync = fast_sync_seconds
        self._ledger = ledger
        self.base = directory
        # what dead processes recorded here is applied before anything new is recorded
        self.recovered = self.recover(ledger, directory)
        self.directory, self._owner_fd = journal_dirs.claim(directory, database_key(ledger))
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._segment_lines = segment_lines
        self.stats = JournalStats()
        # Lock order: _syncs, then _write_lock.
        self._write_lock = threading.Lock()
        # One fsync at a time; the others wait on the condition, not in a queue for a
        # lock: a line the running fsync covers returns as soon as it ends, instead of
        # after the fsync of whoever got the lock next (a convoy that halved the lines
        # per fsync at 8 threads).
        self._syncs = threading.Condition()
        self._syncing = False
        self._recent_syncs: deque[float] = deque(maxlen=_SYNC_WINDOW)
        self._disk_sync = 0.0  # the disk's own fsync time, as far as the recent ones tell
        self._probe_at = 0.0
        self._names = itertools.count()
        self._written = 0
        self._synced = 0
        self._segment = self._new_segment()
        self._fd = self._open(self._segment)
        self._calibrate()
        self._sealed: list[_Segment] = []  # full segments not deleted yet
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._hurry = threading.Event()  # a full batch, flush() or close(): linger no more
        self._idle = threading.Condition()
        self._outstanding = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ledger-journal", daemon=True)
        self._thread.start()

    @property
    def linger_seconds(self) -> float:
        return self._linger

    @property
    def fast_sync_seconds(self) -> float:
        return self._fast_sync

    # -- files ------------------------------------------------------------------------

    def _new_segment(self) -> _Segment:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"journal-{stamp}-{os.getpid()}-{next(self._names):06d}.jsonl"
        return _Segment(self.directory / name)

    @staticmethod
    def _open(segment: _Segment) -> int:
        fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT, 0o600)
        _reserve(fd, segment)
        return fd

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("journal-*.jsonl"))

    # -- recording --------------------------------------------------------------------

    def record(self, charge: PendingCharge) -> WrittenLine:
        """Append ``charge`` and return its line once it is on disk; the writer applies it later.

        Raises ``BillingUnavailable`` when the line cannot be written (a full disk): the
        caller then still has the charge in hand.
        """
        line = self.write(charge)
        self.sync_here(line)
        self.accept(line, charge)
        return line

    def write(self, charge: PendingCharge) -> WrittenLine:
        """Step one of ``record``: the line is in the file, not yet known to be on disk."""
        text = charge.to_line()
        try:
            with self._write_lock:
                if self._closed:
                    raise BillingUnavailable("settle journal is closed")
                segment = self._segment
                if segment.allocated and segment.offset + len(text) > segment.allocated:
                    _reserve(self._fd, segment)
                if os.pwrite(self._fd, text, segment.offset) != len(text):
                    # a short write (a full disk): the next line overwrites what got out
                    raise OSError(errno.ENOSPC, "short write")
                segment.offset += len(text)
                self._written += 1
                segment.recorded += 1
                with self._idle:
                    self._outstanding += 1
                return WrittenLine(segment, self._written, text)
        except OSError as error:
            raise BillingUnavailable(f"settle journal {self.directory}: {error}") from error

    def on_disk(self, line: WrittenLine) -> bool:
        """Whether an fsync has covered ``line`` (step two of ``record`` is then done)."""
        return self._synced >= line.number

    def sync_here(self, line: WrittenLine) -> None:
        """Step two of ``record`` for a thread that waits for it itself: timed. The
        interpreter lock is let go meanwhile, so that other threads write their lines
        and share the next fsync."""
        self._sync_or_raise(line, timed=True, keep_lock=False)

    def sync_on_loop(self, line: WrittenLine) -> None:
        """Step two of ``record`` for an event loop that waits for it itself (the disk
        quick, or no other call in flight: ``LoopRecorder``): timed, with the interpreter
        lock kept through the fsync (``disk_sync``), so that the time is the disk's and
        not also the wait to get the lock back from the writer or LiteLLM's threads.
        Nothing of the loop's own can write a line meanwhile anyway."""
        self._sync_or_raise(line, timed=True, keep_lock=True)

    def sync_to(self, line: WrittenLine) -> None:
        """Step two of ``record``: return once an fsync covers ``line`` (its own or another's).

        For a caller that hands the wait to another thread (``LoopRecorder``): its fsync
        is not timed (see ``_SYNC_WINDOW``)."""
        self._sync_or_raise(line, timed=False, keep_lock=False)

    def _sync_or_raise(self, line: WrittenLine, *, timed: bool, keep_lock: bool) -> None:
        try:
            self._sync_to(line.number, timed=timed, keep_lock=keep_lock)
        except OSError as error:
            raise BillingUnavailable(f"settle journal {self.directory}: {error}") from error

    def accept(self, line: WrittenLine, charge: PendingCharge) -> None:
        """Step three of ``record``, once ``line`` is on disk: hand the charge to the writer."""
        self.stats.recorded += 1
        self._queue.put((line.segment, charge, line.text))
        if self._queue.qsize() >= self._max_batch - 1:
            self._hurry.set()  # a full batch: the writer lingers no more
        if line.segment.recorded >= self._segment_lines:
            self._rotate(line.segment)

    @property
    def syncing(self) -> bool:
        """Whether an fsync (or a rotation) runs now: a caller waiting for it would block."""
        return self._syncing

    @property
    def loop_may_sync(self) -> bool:
        """Whether a caller on an event loop may wait for an fsync itself at all
        (``fast_sync_seconds`` 0: never)."""
        return self._fast_sync > 0

    def syncs_fast(self) -> bool:
        """Whether a ``record`` now would take about one quick fsync: none is running and
        the disk's recent ones took under ``fast_sync_seconds`` (0: never), as the low end
        of those waited for tells (``_DISK_RANK``).
        An event loop then records on its own thread rather than paying two thread
        hand-offs. While they are slow it says yes once per ``PROBE_SECONDS``."""
        if self._syncing or not self.loop_may_sync:
            return False
        if self._disk_sync < self._fast_sync:
            return True
        now = time.monotonic()
        if now < self._probe_at:
            return False
        self._probe_at = now + PROBE_SECONDS
        return True

    def _calibrate(self) -> None:
        """The disk's speed before the first charge: a few fsyncs of the new file, after
        one that writes back its creation and reserved space (a few times slower)."""
        try:
            os.fdatasync(self._fd)
            for _ in range(_CALIBRATION_SYNCS):
                started = time.perf_counter()
                fdatasync_keeping_lock(self._fd)
                self._timed_sync(time.perf_counter() - started)
        except OSError:
            os.close(self._fd)
            raise

    def _timed_sync(self, took: float) -> None:
        self._recent_syncs.append(took)
        ranked = sorted(self._recent_syncs)
        self._disk_sync = ranked[min(_DISK_RANK, len(ranked) - 1)]
        if self._disk_sync >= self._fast_sync:
            self._probe_at = time.monotonic() + PROBE_SECONDS

    def _sync_to(self, mine: int, *, timed: bool, keep_lock: bool) -> None:
        if self._synced >= mine:
            return
        with self._syncs:
            while self._syncing:
                self._syncs.wait()
                if self._synced >= mine:
                    return  # someone else's fsync covered this line
            if self._synced >= mine:
                return
            self._syncing = True
        synced = None
        try:
            with self._write_lock:
                target, fd = self._written, self._fd
            started = time.perf_counter()
            if keep_lock:
                fdatasync_keeping_lock(fd)
            else:
                os.fdatasync(fd)
            took = time.perf_counter() - started
            synced = target
            self.stats.fsyncs += 1
            if timed:
                self._timed_sync(took)
            else:
                self.stats.fsyncs_handed_off += 1
        finally:
            with self._syncs:
                if synced is not None:
                    self._synced = synced
                self._syncing = False
                self._syncs.notify_all()

    @contextmanager
    def _no_sync(self) -> Iterator[None]:
        """No fsync runs while the files change (rotation, close)."""
        with self._syncs:
            while self._syncing:
                self._syncs.wait()
            self._syncing = True
        try:
            with self._write_lock:
                yield
        finally:
            with self._syncs:
                self._syncing = False
                self._syncs.notify_all()

    def _rotate(self, full: _Segment) -> None:
        with self._no_sync():
            if self._segment is not full:
                return
            _trim(self._fd, full)
            os.fdatasync(self._fd)
            self._synced = self._written
            os.close(self._fd)
            full.sealed = True
            self._sealed.append(full)
            self._segment = self._new_segment()
            self._fd = self._open(self._segment)

    def _delete_applied(self) -> None:
        with self._write_lock:
            sealed = list(self._sealed)
        for segment in sealed:
            try:
                self._maybe_delete(segment)
            except CreditsError as error:  # kept; checked again after the next batch or at start
                log.warning("settle journal: %s not deleted yet: %s", segment.path, error)
                continue
            if not segment.path.exists():
                with self._write_lock:
                    self._sealed.remove(segment)

    def _maybe_delete(self, segment: _Segment) -> None:
        """Delete a sealed, applied segment once the ledger provably holds all of it.

        Batches are committed without waiting for the WAL flush, so first a sync point
        (every earlier commit is then on disk), then a check that each charge of the
        segment has its usage event; any that has not (a database that crashed and lost
        its last commits) is applied again before the file goes.
        """
        if not segment.sealed or segment.applied < segment.recorded or not segment.path.exists():
            return
        box = Outbox(segment.path)
        self._ledger.sync_point()
        missing = self._ledger.unsettled(box.hold_ids())
        if missing:
            log.error(
                "settle journal: %d charges of %s were not in the ledger; applied again",
                len(missing),
                segment.path,
            )
            apply_charges(self._ledger, [c for c in box.pending() if c.hold_id in missing])
            self._ledger.sync_point()
        segment.path.unlink(missing_ok=True)

    # -- applying ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if first is _HURRY:
                continue
            self._linger_for_more()
            batch = [first]
            stop = take_queued(self._queue, batch, self._max_batch, _STOP, skip=_HURRY)
            self._apply_until_done(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _linger_for_more(self) -> None:
        """Wait up to the linger, unless a batch is full or flush() or close() waits.

        The charges are on disk already: waiting a few ms to apply more of them in one
        transaction costs nobody anything but the read-your-writes lag. The writer is
        woken twice per batch (its first line, the end of the wait), never per line: a
        writer woken per line took the interpreter lock from the recording thread once
        per call. ``record`` cuts the wait short when the queue holds a full batch.
        """
        if self._queue.qsize() < self._max_batch - 1:
            self._hurry.wait(self._linger)
        self._hurry.clear()

    def _apply_until_done(self, batch: list[tuple[_Segment, PendingCharge, bytes]]) -> None:
        delay = _RETRY_FIRST_S
        charges = [charge for _, charge, _ in batch]
        lines = [text for _, _, text in batch]
        while True:
            try:
                dropped = apply_charges(self._ledger, charges, lines, self.stats)
                break
            except BillingUnavailable as error:
                # The database is away: keep the batch (it is on disk anyway) and retry.
                self.stats.retries += 1
                self.stats.last_error = str(error)
                log.warning("settle journal: %d charges wait for the ledger: %s", len(batch), error)
            except Exception as error:
                # Anything else is a bug, but this thread is the only one applying the
                # journal: it must not die. The charges stay on disk; keep trying.
                self.stats.retries += 1
                self.stats.last_error = repr(error)
                log.exception("settle journal: %d charges not applied, trying again", len(batch))
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        self.stats.batches += 1
        self.stats.applied += len(batch) - dropped
        self.stats.dropped += dropped
        for segment, _, _ in batch:
            segment.applied += 1
        self._delete_applied()
        with self._idle:
            self._outstanding -= len(batch)
            if self._outstanding == 0:
                self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every charge recorded so far is applied; False on timeout."""
        deadline = time.monotonic() + timeout
        self._queue.put(_HURRY)
        with self._idle:
            while self._outstanding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # again each time: a writer that took the last wake-up for another batch
                # would linger on this one
                self._hurry.set()
                self._idle.wait(min(left, _FLUSH_NUDGE_SECONDS))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Apply what is recorded (waiting up to ``timeout``), then stop the writer.

        Lines not applied by then stay in their segment for ``recover`` at next start.
        """
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)  # the writer applies what is queued, then stops
        self._hurry.set()
        self._thread.join(timeout)
        with self._no_sync():
            _trim(self._fd, self._segment)
            os.fdatasync(self._fd)
            os.close(self._fd)
            self._segment.sealed = True
            self._sealed.append(self._segment)
        self._delete_applied()
        # a directory with segments left keeps them for the next process to apply
        journal_dirs.release(self.directory, self._owner_fd, remove=True)

    @staticmethod
    def recover(ledger: Ledger, base: Path) -> int:
        """Apply the segments that processes now gone left under ``base``; returns the charges.

        Segments in ``base`` itself and in every directory under it whose owner is dead
        and whose database is ``ledger``'s (``journal_dirs``); never those of a live
        process, nor those of another database. ``Outbox.drain`` does the work:
        idempotent by hold id, keeping what the ledger still refuses for the next try.
        """
        landed = 0
        with journal_dirs.orphans(base, database_key(ledger)) as dead:
            for directory in [base, *dead]:
                for path in sorted(directory.glob("journal-*.jsonl")):
                    box = Outbox(path)
                    landed += box.drain(ledger)
                    if not box.pending():
                        path.unlink(missing_ok=True)
                if directory is not base:
                    journal_dirs.remove_if_empty(directory)
        if landed:
            ledger.sync_point()
        return landed


def database_key(ledger: Ledger) -> str:
    """Which database a journal directory's charges belong to: its URL without the
    password (a rotated password must not orphan a dead process's charges), digested."""
    return hashlib.sha256(ledger.url.encode()).hexdigest()[:16]


def _reserve(fd: int, segment: _Segment) -> None:
    """Reserve the next ``PREALLOCATE_BYTES`` of the segment (nothing where unsupported).

    A crash leaves the reserved tail as NUL bytes, which readers skip (``Outbox``).
    """
    try:
        os.posix_fallocate(fd, segment.allocated, PREALLOCATE_BYTES)
    except OSError as error:
        log.info("settle journal: no space reserved ahead in %s: %s", segment.path, error)
        segment.allocated = 0
        return
    segment.allocated += PREALLOCATE_BYTES


def _trim(fd: int, segment: _Segment) -> None:
    """Cut the reserved tail off a segment that takes no more lines."""
    if segment.allocated:
        os.ftruncate(fd, segment.offset)
        segment.allocated = 0


def apply_charges(
    ledger: Ledger,
    charges: list[PendingCharge],
    lines: list[bytes] | None = None,
    stats: JournalStats | None = None,
) -> int:
    """Apply ``charges`` to the ledger, as many as possible in one transaction per batch.

    ``lines``: each charge's line as the journal wrote it, when the caller has them
    (PostgreSQL books a batch from them). Returns how many were dropped for good. Raises
    ``BillingUnavailable`` when the database is away (nothing of the batch may then be
    assumed written, and applying it again is safe).
    """
    dropped = 0
    # a whole segment's worth (the check after a database crash) goes in slices: one
    # statement's ids must stay under SQLite's 32,766 parameters
    rest = [
        c
        for i in range(0, len(charges), MAX_BATCH)
        for c in _apply_batch(
            ledger, charges[i : i + MAX_BATCH], None if lines is None else lines[i : i + MAX_BATCH], stats
        )
    ]
    for charge in rest:
        # The rare paths one by one: a hold already settled, voided, expired or never
        # written (an async hold lost in a database crash), or a batch that failed.
        try:
            apply_one(ledger, charge)
        except (HoldNotFound, AccountNotFound) as error:
            dropped += 1
            log.critical("settle journal: charge %s dropped: %s", charge.hold_id, error)
        except BillingUnavailable:
            raise
        except CreditsError as error:
            dropped += 1
            log.critical("settle journal: charge %s refused: %s", charge.hold_id, error)
    return dropped


def _apply_batch(
    ledger: Ledger, batch: list[PendingCharge], lines: list[bytes] | None, stats: JournalStats | None
) -> list[PendingCharge]:
    """Apply in ONE transaction every charge of an open hold and every escrowed charge.

    Returns the charges left for the one-by-one paths. The commit does not wait for
    the WAL flush: the journal keeps the lines until ``sync_point`` and a check.
    """
    now = ledger.now()
    if ledger.batch_function:
        charged = _apply_in_function(ledger, batch, lines, now)
        if charged is not None:
            if stats is not None:
                stats.batches_in_function += 1
            return _left(batch, charged)
    held = [c for c in batch if c.escrow_hold_id is None]
    escrowed = [c for c in batch if c.escrow_hold_id is not None and c.account_id is not None]
    try:
        with ledger.core_transaction(flush=False) as conn:
            done = settle_batch.settle(
                conn,
                [settle_batch.OpenCharge(c.hold_id, c.micro, c.usage) for c in held],
                [
                    settle_batch.LentCharge(c.hold_id, c.escrow_hold_id, c.account_id, c.micro, c.usage)
                    for c in escrowed
                    if c.escrow_hold_id is not None and c.account_id is not None
                ],
                now,
            )
    except CreditsError:
        raise
    except Exception as error:  # one bad line must not block the others: one by one
        log.error("settle journal: batch of %d rolled back (%s); applying one by one", len(batch), error)
        return batch
    return _left(batch, done)


def _apply_in_function(
    ledger: Ledger, batch: list[PendingCharge], lines: list[bytes] | None, now: datetime
) -> set[str] | None:
    """The batch in one statement (``settle_batch_function``); the hold ids charged, or
    None (nothing written) when it is the statements' to book."""
    try:
        with ledger.core_statement(flush=False) as conn:
            return settle_batch_function.settle(
                conn, batch, lines if lines is not None else [c.to_line() for c in batch], now
            )
    except Unavailable as why:
        if why.args[0] != NEEDS_BURN_LOOP:
            log.warning(
                "settle journal: %s is missing (a database not migrated to 0004): "
                "batches are booked statement by statement",
                settle_batch_function.NAME,
            )
            ledger.batch_function = False
        return None
    except CreditsError:
        raise
    except Exception as error:  # the statements say which charge it was, if it is one
        log.error("settle journal: batch of %d not booked in one statement (%s)", len(batch), error)
        return None


def _left(batch: list[PendingCharge], done: set[str]) -> list[PendingCharge]:
    """The charges of ``batch`` not charged now, for the one-by-one paths."""
    rest: list[PendingCharge] = []
    seen: set[str] = set()
    for charge in batch:
        # a repeat of a hold id in the same batch goes the one-by-one way (it is settled)
        if charge.hold_id not in done or charge.hold_id in seen:
            rest.append(charge)
        seen.add(charge.hold_id)
    return rest

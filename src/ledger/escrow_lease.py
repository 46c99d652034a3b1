"""Blocks of a shared escrow, leased to one process and lent from its memory.

With ``CREDITS_ESCROW=redis`` every call's loan and give-back was a Redis round trip
(about 0.2 ms of Python each in redis-py): the shared escrow cost more per call than an
in-process one. A ``LeasedBook`` takes a block of ``calls_per_block`` worst cases from
the shared book in ONE loan, lends it call by call from memory (on the event loop: no
I/O), and gives the block back in one give-back once it is replaced and its last call
is done. So Redis sees one round trip per ``calls_per_block`` calls, and replicas still
share one escrow per account.

Why the books stay exact: a block is an ordinary loan of the shared book, and each
call lent from it is charged against the same escrow hold (``settle_escrowed`` with the
escrow's id), so PostgreSQL takes every charge out of the escrow as before. The block's
give-back returns what its calls did not use (``block amount - sum of charges``, which
a call costing more than its loan makes smaller, even negative, as the shared book
expects), so Redis never counts credit the charges have taken.

A hot account never waits for Redis: once its block is down to a quarter of its calls
(``LOW_WATER``), the next block is leased in the background, and the call that finds
the old one spent lends from the new one at once. Without it, one call in
``calls_per_block`` waited for two round trips (the new block's loan, the old one's
give-back): off the event loop, a thread hand-off each way too.

Why it cannot overspend: a block lends only what it leased, and stops lending before
its escrow's lending deadline (and after ``block_seconds`` in any case), so nothing is
lent from an escrow the database may have expired. What a block holds while its
process is idle, or after its process died, is credit lent and not given back: it stays
held in the escrow until the escrow expires (conservative), as any loan of a dead call.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from pricing.errors import InvalidOperation

from .escrow import EscrowBook
from .ids import new_hold_id
from .types import Hold

log = logging.getLogger("credits.escrow")

CALLS_PER_BLOCK: Final = 50
BLOCK_SECONDS: Final = 30.0
LOW_WATER: Final = 0.25  # a block with this share of its calls left has its successor leased


@dataclass(slots=True)
class _Block:
    lease: Hold  # the shared book's loan this block lends from
    deadline: float  # time.monotonic() after which it lends no more
    remaining: int
    used: int = 0
    inflight: int = 0
    retired: bool = False
    leased_ahead: bool = False  # its successor was asked for (once a block, got or not)
    loans: set[str] = field(default_factory=set)


class LeasedBook:
    """Lends from blocks leased from ``shared`` (a book on Redis); same API as ``EscrowBook``."""

    instant: Final = True  # lend_now and give_back_now work (in memory)

    def __init__(
        self,
        shared: EscrowBook,
        *,
        calls_per_block: int = CALLS_PER_BLOCK,
        block_seconds: float = BLOCK_SECONDS,
        low_water: float = LOW_WATER,
    ) -> None:
        if calls_per_block < 1 or block_seconds <= 0 or not 0 <= low_water <= 1:
            raise InvalidOperation(
                "calls_per_block must be >= 1, block_seconds > 0 and low_water from 0 to 1"
            )
        self.shared = shared
        self._calls = calls_per_block
        self._seconds = block_seconds
        # in worst cases of the call that finds the block this low; 0: never lease ahead
        self._low_water = math.ceil(calls_per_block * low_water)
        self._lock = threading.Lock()
        self._leased = threading.Condition(self._lock)  # a lease ahead ended
        self._blocks: dict[int, _Block] = {}  # account -> the block it lends from now
        self._ahead: dict[int, _Block] = {}  # account -> the block leased to lend from next
        self._leasing: set[int] = set()  # accounts whose next block is being leased
        self._lent: dict[str, _Block] = {}  # loan id -> its block
        self._closed = False

    # -- lending ----------------------------------------------------------------------

    def lend_now(self, account_id: int, micro: int, *, reference: str = "") -> Hold | None:
        """A loan from this process's block for the account, or None (then ``lend``)."""
        if micro <= 0:
            return None
        done: list[_Block] = []
        ahead = False
        with self._lock:
            block = self._lending(account_id, micro, done)
            loan = None if block is None else self._loan(block, micro, reference)
            if block is not None:
                ahead = self._runs_low(account_id, block, micro)
        for spent in done:
            self._in_background(self._close, spent)
        if ahead:
            self._in_background(self._lease_ahead, account_id, micro, reference)
        return loan

    def lend(self, account_id: int, micro: int, *, reference: str = "") -> Hold | None:
        """``lend_now``, else lease a new block (one loan of the shared book), else one
        loan of the shared book for this call alone (the escrow is too low for a block)."""
        loan = self.lend_now(account_id, micro, reference=reference)
        if loan is not None:
            return loan
        lease = self.shared.lend(account_id, micro * self._calls, reference=reference)
        if lease is None:
            return self.shared.lend(account_id, micro, reference=reference)
        block = self._new_block(lease)
        done: list[_Block] = []
        with self._lock:
            old = self._blocks.get(account_id)
            if old is not None:
                self._retire(account_id, old, done)
            self._blocks[account_id] = block
            loan = self._loan(block, micro, reference)
        for spent in done:
            self._close(spent)
        return loan

    def _lending(self, account_id: int, micro: int, done: list[_Block]) -> _Block | None:
        """The block that can lend ``micro`` now: the current one, else the one leased
        ahead (which then replaces it). Blocks past their deadline are retired on the
        way; those with no call left go to ``done``, to be handed back."""
        now = time.monotonic()
        block = self._blocks.get(account_id)
        if block is not None and now >= block.deadline:
            # past its deadline: lends no more; handed back once its last call is done
            self._retire(account_id, block, done)
            block = None
        if block is not None and block.remaining >= micro:
            return block
        ahead = self._ahead.get(account_id)
        if ahead is not None and now >= ahead.deadline:
            del self._ahead[account_id]
            done.append(ahead)
            ahead = None
        if ahead is None or ahead.remaining < micro:
            return None
        del self._ahead[account_id]
        if block is not None:
            self._retire(account_id, block, done)
        self._blocks[account_id] = ahead
        return ahead

    def _runs_low(self, account_id: int, block: _Block, micro: int) -> bool:
        """Whether to lease the account's next block now: once per block (an escrow too
        low for a second block is not asked again on every call), one at a time."""
        if self._low_water == 0 or block.leased_ahead or block.remaining >= micro * self._low_water:
            return False
        block.leased_ahead = True
        if account_id in self._ahead or account_id in self._leasing or self._closed:
            return False
        self._leasing.add(account_id)
        return True

    def _lease_ahead(self, account_id: int, micro: int, reference: str) -> None:
        """Lease the account's next block (a background job): lent from once the
        current one is spent. None from the shared book leaves things as they were."""
        block = None
        try:
            lease = self.shared.lend(account_id, micro * self._calls, reference=reference)
            block = None if lease is None else self._new_block(lease)
        finally:
            with self._lock:
                self._leasing.discard(account_id)
                if block is not None and not self._closed and account_id not in self._ahead:
                    self._ahead[account_id] = block
                    block = None
                self._leased.notify_all()
        if block is not None:
            self._close(block)  # the book closed meanwhile

    def _new_block(self, lease: Hold) -> _Block:
        deadline = time.monotonic() + self._seconds
        if lease.escrow_hold_id is not None:
            # never past the moment the shared book itself stops lending from the escrow
            lends_until = lease.expires_at - timedelta(seconds=self.shared.lend_margin_seconds)
            deadline = min(deadline, time.monotonic() + (lends_until - lease.created_at).total_seconds())
        return _Block(lease=lease, deadline=deadline, remaining=lease.amount)

    def _loan(self, block: _Block, micro: int, reference: str) -> Hold:
        block.remaining -= micro
        block.inflight += 1
        lease = block.lease
        # built directly, not with dataclasses.replace: this runs once per call
        loan = Hold(
            new_hold_id(),  # in time order, as every hold id (``ledger.ids``)
            lease.account_id,
            micro,
            "open",
            lease.expires_at,
            reference,
            None,
            lease.created_at,
            None,
            lease.balance_after,
            # the block's unlent credit is the account's to spend too, as the escrow's is
            lease.available_after + block.remaining,
            lease.escrow_hold_id,
        )
        block.loans.add(loan.id)
        self._lent[loan.id] = block
        return loan

    def _retire(self, account_id: int, block: _Block, done: list[_Block]) -> None:
        """``block`` lends no more; it goes to ``done`` if no call of it is in flight
        (the last one's give-back hands it back otherwise)."""
        block.retired = True
        if self._blocks.get(account_id) is block:
            del self._blocks[account_id]
        if block.inflight == 0:
            done.append(block)

    def unlent(self, account_id: int) -> int:
        """The shared escrow's unlent credit and this process's block's (other replicas'
        blocks count as lent until they come back)."""
        with self._lock:
            own = sum(
                b.remaining
                for b in (self._blocks.get(account_id), self._ahead.get(account_id))
                if b is not None and not b.retired
            )
        return self.shared.unlent(account_id) + own

    # -- giving back ------------------------------------------------------------------

    def give_back_now(self, hold: Hold, micro_used: int) -> bool:
        """Return what a loan did not use to its block; a retired block's last loan hands
        the block back to the shared book in the background. False: not one of ours."""
        ours, done = self._settle(hold, micro_used)
        if done is not None:
            self._in_background(self._close, done)
        return ours

    def give_back(self, hold: Hold, micro_used: int) -> None:
        ours, done = self._settle(hold, micro_used)
        if not ours:
            self.shared.give_back(hold, micro_used)  # a per-call loan of the shared book
        elif done is not None:
            self._close(done)

    def _settle(self, hold: Hold, micro_used: int) -> tuple[bool, _Block | None]:
        """(the loan was lent from a block, the block if it is now done with)."""
        with self._lock:
            block = self._lent.pop(hold.id, None)
            if block is None:
                return False, None
            block.loans.discard(hold.id)
            block.remaining += hold.amount - micro_used
            block.used += micro_used
            block.inflight -= 1
            return True, (block if block.retired and block.inflight == 0 else None)

    def _close(self, block: _Block) -> None:
        """The block back to the shared book: what its calls used is what it used."""
        self.shared.give_back(block.lease, block.used)

    def _in_background(self, job: Callable[..., None], *args: object) -> None:
        self.shared.in_background(job, *args)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def store(self) -> object:
        return self.shared.store

    def wait_refills(self, timeout: float = 30.0) -> None:
        """Return once the leases ahead and the shared book's refills started so far
        are done (tests; the audit reads the books at rest)."""
        with self._leased:
            self._leased.wait_for(lambda: not self._leasing, timeout)
        self.shared.wait_refills()

    def close(self) -> None:
        """Hand back every idle block and every block leased ahead (busy ones stay lent
        until their escrow expires); a lease ahead still under way is handed back when
        it ends, before the shared book closes."""
        idle: list[_Block] = []
        with self._lock:
            self._closed = True
            for account_id, block in list(self._blocks.items()):
                if block.inflight == 0:
                    self._retire(account_id, block, idle)
            idle.extend(self._ahead.values())
            self._ahead.clear()
        for block in idle:
            self._close(block)
        self.shared.close()

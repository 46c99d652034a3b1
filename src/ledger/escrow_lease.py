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

Why it cannot overspend: a block lends only what it leased, and stops lending before
its escrow's lending deadline (and after ``block_seconds`` in any case), so nothing is
lent from an escrow the database may have expired. What a block holds while its
process is idle, or after its process died, is credit lent and not given back: it stays
held in the escrow until the escrow expires (conservative), as any loan of a dead call.
"""

from __future__ import annotations

import logging
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


@dataclass(slots=True)
class _Block:
    lease: Hold  # the shared book's loan this block lends from
    deadline: float  # time.monotonic() after which it lends no more
    remaining: int
    used: int = 0
    inflight: int = 0
    retired: bool = False
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
    ) -> None:
        if calls_per_block < 1 or block_seconds <= 0:
            raise InvalidOperation("calls_per_block must be >= 1 and block_seconds > 0")
        self.shared = shared
        self._calls = calls_per_block
        self._seconds = block_seconds
        self._lock = threading.Lock()
        self._blocks: dict[int, _Block] = {}  # account -> the block it lends from now
        self._lent: dict[str, _Block] = {}  # loan id -> its block

    # -- lending ----------------------------------------------------------------------

    def lend_now(self, account_id: int, micro: int, *, reference: str = "") -> Hold | None:
        """A loan from this process's block for the account, or None (then ``lend``)."""
        if micro <= 0:
            return None
        with self._lock:
            block = self._blocks.get(account_id)
            if block is None or block.retired or block.remaining < micro:
                return None
            if time.monotonic() < block.deadline:
                return self._loan(block, micro, reference)
            # past its deadline: lends no more; handed back once its last call is done
            self._retire(account_id, block)
            idle = block.inflight == 0
        if idle:
            self._in_background(self._close, block)
        return None

    def lend(self, account_id: int, micro: int, *, reference: str = "") -> Hold | None:
        """``lend_now``, else lease a new block (one loan of the shared book), else one
        loan of the shared book for this call alone (the escrow is too low for a block)."""
        loan = self.lend_now(account_id, micro, reference=reference)
        if loan is not None:
            return loan
        lease = self.shared.lend(account_id, micro * self._calls, reference=reference)
        if lease is None:
            return self.shared.lend(account_id, micro, reference=reference)
        deadline = time.monotonic() + self._seconds
        if lease.escrow_hold_id is not None:
            # never past the moment the shared book itself stops lending from the escrow
            lends_until = lease.expires_at - timedelta(seconds=self.shared.lend_margin_seconds)
            deadline = min(deadline, time.monotonic() + (lends_until - lease.created_at).total_seconds())
        block = _Block(lease=lease, deadline=deadline, remaining=lease.amount)
        with self._lock:
            old = self._blocks.get(account_id)
            closing = None
            if old is not None and not old.retired:
                self._retire(account_id, old)
                closing = old if old.inflight == 0 else None
            self._blocks[account_id] = block
            loan = self._loan(block, micro, reference)
        if closing is not None:
            self._close(closing)
        return loan

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

    def _retire(self, account_id: int, block: _Block) -> None:
        block.retired = True
        if self._blocks.get(account_id) is block:
            del self._blocks[account_id]

    def unlent(self, account_id: int) -> int:
        """The shared escrow's unlent credit and this process's block's (other replicas'
        blocks count as lent until they come back)."""
        with self._lock:
            block = self._blocks.get(account_id)
            own = block.remaining if block is not None and not block.retired else 0
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

    def _in_background(self, job: Callable[[_Block], None], block: _Block) -> None:
        self.shared.in_background(job, block)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def store(self) -> object:
        return self.shared.store

    def wait_refills(self) -> None:
        self.shared.wait_refills()

    def close(self) -> None:
        """Hand back every idle block (busy ones stay lent until their escrow expires)."""
        with self._lock:
            idle = [b for b in self._blocks.values() if b.inflight == 0]
            for account_id in [a for a, b in self._blocks.items() if b.inflight == 0]:
                self._retire(account_id, self._blocks[account_id])
        for block in idle:
            self._close(block)
        self.shared.close()

"""Where ``ledger.escrow`` keeps what each escrow has left to lend: the store's contract.

``EscrowBook`` decides (amounts, deadlines, when to renew or refill) and talks to
PostgreSQL; a store only keeps the figures and changes them in atomic steps, one
method per step. Two stores implement it:

- ``escrow_redis.RedisEscrowStore``: Lua scripts on one Redis, shared by every proxy
  replica (one escrow per account for all of them);
- ``escrow_memory.MemoryEscrowStore``: the same steps in Python under a lock, for one
  proxy process (no Redis).

Per account a store keeps the current escrow (``Current``) and, for escrows replaced
while calls they lent are still running, what those calls may still give back.
Times are ms since the epoch on the ledger's clock (``now_ms``); the whole record of
an account is forgotten once ``until`` of its current escrow is past (a store with no
expiry of its own checks that on access).

Amounts are exact integers (µcr) in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

# What the refill lock holds for an account found too poor for an escrow: nobody refills
# it (every replica falls back to ordinary holds) until the mark runs out.
POOR: Final = "poor"


class StoreUnavailable(Exception):
    """The store cannot be used right now (Redis down, timed out): lend nothing from it."""


@dataclass(frozen=True, slots=True)
class Current:
    """An account's current escrow, as the store has it."""

    id: str  # the escrow's PostgreSQL hold id
    rem: int  # not lent yet (negative after calls that cost more than they were lent)
    inf: int  # calls lent and not given back
    until: int  # lend from it only before this: its PostgreSQL expiry minus a margin
    renew: int  # renew it from this time on
    exp: int  # its PostgreSQL expiry


@dataclass(frozen=True, slots=True)
class Taken:
    """One loan taken from the current escrow (``take``)."""

    escrow_id: str
    rem: int  # what the escrow has left after this loan
    renew: bool  # this lender renews the escrow (the others keep lending meanwhile)
    refill: bool  # below its low watermark: this lender opens the next escrow
    exp: int
    avail: int  # the account's available and balance right after the escrow was taken
    bal: int


@dataclass(frozen=True, slots=True)
class NewEscrow:
    """An escrow to install as current (``install``)."""

    id: str
    rem: int  # what it may lend: its amount, less the first loan when there is one
    inf: int  # 1 when the caller's loan is already taken from it, else 0
    low: int  # the low watermark: a loan that leaves less has the next escrow opened
    until: int
    renew: int
    exp: int
    avail: int
    bal: int


class EscrowStore(Protocol):
    """The atomic steps ``EscrowBook`` needs; each is all or nothing, safe across threads.

    Any method may raise ``StoreUnavailable``; none is retried by the store (a give back
    sent twice would return its credit twice).
    """

    def take(
        self, account_id: int, micro: int, now_ms: int, renew_claim: int, refill_claim: int
    ) -> Taken | None:
        """Lend ``micro`` from the current escrow, or None (none, past ``until``, too little left).

        ``renew`` is True for one lender once ``now_ms`` reaches the escrow's ``renew``
        time, which then becomes ``renew_claim`` (so a failed renewal is tried again
        after it); ``refill`` likewise once the escrow is below its low watermark, with
        ``refill_claim``.
        """
        ...

    def install(self, account_id: int, escrow: NewEscrow, now_ms: int) -> tuple[str, int]:
        """Make ``escrow`` current; returns (the replaced escrow's id or "", µcr to shrink it by).

        The replaced escrow's unlent remainder (when positive) is to be shrunk back to
        the account at once; what its running calls give back is kept until the last of
        them does (``give_back``). Forgets replaced escrows past their expiry.
        """
        ...

    def give_back(self, account_id: int, escrow_id: str, micro_back: int, now_ms: int) -> int:
        """A loan of ``escrow_id`` comes back with ``micro_back`` (negative: the call cost more).

        Returns µcr to shrink the escrow by: a replaced escrow's remainder when its last
        call gave back, else 0.
        """
        ...

    def renewed(self, account_id: int, escrow_id: str, until: int, renew: int, exp: int, now_ms: int) -> bool:
        """Move the deadlines of ``escrow_id`` after PostgreSQL renewed it; False when not current."""
        ...

    def retire_dead(self, account_id: int, escrow_id: str) -> bool:
        """Forget ``escrow_id`` as current (PostgreSQL no longer holds it open); False when not current."""
        ...

    def current(self, account_id: int, now_ms: int) -> Current | None:
        """The account's current escrow, if any (a read: refills, tests and operators)."""
        ...

    def acquire(self, account_id: int, token: str, ttl_ms: int) -> str:
        """Take the account's refill lock for ``ttl_ms``: ``token`` when taken, else what holds it."""
        ...

    def release(self, account_id: int, token: str, mark: str, mark_ttl_ms: int) -> None:
        """Release the lock if ``token`` holds it; with a ``mark``, leave that for ``mark_ttl_ms``."""
        ...

    def holder(self, account_id: int) -> str | None:
        """What holds the account's refill lock (a token, ``POOR``), None when free."""
        ...

    def close(self) -> None: ...

"""The escrow store in this process's memory: the steps of ``escrow_redis`` in Python.

For a proxy that runs as ONE process: no Redis to run, and a step is a few dict
operations under one ``threading.Lock`` instead of a network round trip. Several
processes each with their own memory store are still correct, since every escrow is
a PostgreSQL hold that only its own store lends from; they are just less thrifty (an
escrow per process for the same account, more credit held at once, more refills).

What Redis expires by itself is checked on access here: an account's record is
forgotten once its current escrow's ``until`` is past on the ledger's clock (the
``now_ms`` the book passes, as PEXPIRE would), and the refill lock and its poor mark
run out on ``time.monotonic`` (as PX does, in real time). Records of accounts nobody
asks about again are swept now and then.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from .escrow_store import Current, NewEscrow, Taken

# How often (ledger ms) install looks for records and locks run out.
SWEEP_EVERY_MS = 60_000


@dataclass(slots=True)
class _Replaced:
    """An escrow replaced while calls it lent are still running."""

    rem: int
    inf: int
    exp: int


@dataclass(slots=True)
class _Record:
    """One account: the Redis hash of ``escrow_redis``."""

    current: NewEscrow | None
    renew_at: int = 0  # ``renew`` and ``refill`` move with their claims
    refill_at: int = 0
    expires: int = 0  # PEXPIRE: the current escrow's ``until`` when it was set
    replaced: dict[str, _Replaced] = field(default_factory=dict)


class MemoryEscrowStore:
    """``EscrowStore`` in memory, for a single proxy process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[int, _Record] = {}
        self._locks: dict[int, tuple[str, float]] = {}  # account -> (holder, monotonic deadline)
        self._next_sweep = 0

    def _record(self, account_id: int, now_ms: int) -> _Record | None:
        record = self._records.get(account_id)
        if record is not None and now_ms >= record.expires:
            del self._records[account_id]
            return None
        return record

    def take(
        self, account_id: int, micro: int, now_ms: int, renew_claim: int, refill_claim: int
    ) -> Taken | None:
        with self._lock:
            record = self._record(account_id, now_ms)
            escrow = record.current if record is not None else None
            if record is None or escrow is None or now_ms >= escrow.until or escrow.rem < micro:
                return None
            escrow = record.current = replace(escrow, rem=escrow.rem - micro, inf=escrow.inf + 1)
            renew = now_ms >= record.renew_at
            if renew:
                record.renew_at = renew_claim
            refill = escrow.rem < escrow.low and now_ms >= record.refill_at
            if refill:
                record.refill_at = refill_claim
            return Taken(escrow.id, escrow.rem, renew, refill, escrow.exp, escrow.avail, escrow.bal)

    def install(self, account_id: int, escrow: NewEscrow, now_ms: int) -> tuple[str, int]:
        with self._lock:
            self._sweep(now_ms)
            record = self._record(account_id, now_ms) or _Record(current=None)
            old, old_id, shrink = record.current, "", 0
            if old is not None:
                old_id, keep = old.id, old.rem
                if old.rem > 0:
                    # not lent to anyone: the account gets it back at once
                    shrink, keep = old.rem, 0
                if old.inf > 0:
                    record.replaced[old.id] = _Replaced(keep, old.inf, old.exp)
            record.replaced = {k: r for k, r in record.replaced.items() if r.exp > now_ms}
            record.current, record.renew_at, record.refill_at = escrow, escrow.renew, 0
            record.expires = escrow.until
            self._records[account_id] = record
            return old_id, shrink

    def give_back(self, account_id: int, escrow_id: str, micro_back: int, now_ms: int) -> int:
        with self._lock:
            record = self._record(account_id, now_ms)
            if record is None:
                return 0
            escrow = record.current
            if escrow is not None and escrow.id == escrow_id:
                record.current = replace(escrow, rem=escrow.rem + micro_back, inf=escrow.inf - 1)
                return 0
            gone = record.replaced.get(escrow_id)
            if gone is None:
                return 0
            gone.rem += micro_back
            gone.inf -= 1
            if gone.inf > 0:
                return 0
            del record.replaced[escrow_id]
            self._forget_if_empty(account_id, record)
            return max(gone.rem, 0)

    def renewed(self, account_id: int, escrow_id: str, until: int, renew: int, exp: int, now_ms: int) -> bool:
        with self._lock:
            record = self._record(account_id, now_ms)
            if record is None or record.current is None or record.current.id != escrow_id:
                return False
            record.current = replace(record.current, until=until, renew=renew, exp=exp)
            record.renew_at, record.expires = renew, until
            return True

    def retire_dead(self, account_id: int, escrow_id: str) -> bool:
        with self._lock:
            record = self._records.get(account_id)
            if record is None or record.current is None or record.current.id != escrow_id:
                return False
            record.current = None
            self._forget_if_empty(account_id, record)
            return True

    def retire_idle(self) -> list[tuple[str, int]]:
        """Stop lending from every current escrow no call is borrowing from; returns
        (escrow id, unlent µcr) of each, for its hold to give that back."""
        with self._lock:
            retired = []
            for account_id, record in list(self._records.items()):
                escrow = record.current
                if escrow is not None and escrow.inf == 0:
                    retired.append((escrow.id, escrow.rem))
                    record.current = None
                    self._forget_if_empty(account_id, record)
            return retired

    def current(self, account_id: int, now_ms: int) -> Current | None:
        with self._lock:
            record = self._record(account_id, now_ms)
            if record is None or record.current is None:
                return None
            e = record.current
            return Current(e.id, e.rem, e.inf, e.until, record.renew_at, e.exp)

    def acquire(self, account_id: int, token: str, ttl_ms: int) -> str:
        with self._lock:
            held = self._holder(account_id)
            if held is not None:
                return held
            self._locks[account_id] = (token, time.monotonic() + ttl_ms / 1000)
            return token

    def release(self, account_id: int, token: str, mark: str, mark_ttl_ms: int) -> None:
        with self._lock:
            if self._holder(account_id) != token:
                return
            if mark:
                self._locks[account_id] = (mark, time.monotonic() + mark_ttl_ms / 1000)
            else:
                del self._locks[account_id]

    def holder(self, account_id: int) -> str | None:
        with self._lock:
            return self._holder(account_id)

    def close(self) -> None:
        with self._lock:
            self._records.clear()
            self._locks.clear()

    def _holder(self, account_id: int) -> str | None:
        held = self._locks.get(account_id)
        if held is None:
            return None
        if time.monotonic() >= held[1]:
            del self._locks[account_id]
            return None
        return held[0]

    def _forget_if_empty(self, account_id: int, record: _Record) -> None:
        # what HDEL of a hash's last fields does in Redis
        if record.current is None and not record.replaced:
            del self._records[account_id]

    def _sweep(self, now_ms: int) -> None:
        """Drop what has run out and nobody asked about since (Redis frees it by itself)."""
        if now_ms < self._next_sweep:
            return
        self._next_sweep = now_ms + SWEEP_EVERY_MS
        for account_id in [a for a, r in self._records.items() if now_ms >= r.expires]:
            del self._records[account_id]
        mono = time.monotonic()
        for account_id in [a for a, (_, until) in self._locks.items() if mono >= until]:
            del self._locks[account_id]

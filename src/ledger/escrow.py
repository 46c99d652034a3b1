"""The hot-account path: calls borrow their credit from one larger PostgreSQL hold.

A hot account serialises on its ``accounts`` row, one commit per call's hold. Here
one ordinary hold (the escrow, reference ``"escrow"``) reserves the worst case of
``calls_per_escrow`` calls at once, and a store lends from it call by call in atomic
steps (``escrow_store``): Redis, shared by every proxy replica (``escrow_redis``), or
this process's memory for a proxy that runs as one process (``escrow_memory``; several
such processes are still correct, each lending from escrows of its own, only less
thrifty). PostgreSQL stays the book of record: each call is charged with
``Ledger.settle_escrowed``, which takes what it cost out of the escrow.

Why it cannot overspend: a store lends only what the escrow's PostgreSQL hold reserved
(its remaining starts at the hold's amount and every loan is taken out atomically), and
it stops lending from an escrow before PostgreSQL would expire it. Losing the store's
data (a Redis flush or restart, a process restart) loses only the record of what is
left: that credit stays held until the escrow expires (conservative), and calls fall
back to per-call holds or a new escrow meanwhile. Redis must not come back with OLDER
data (a stale snapshot would lend again what was lent since): run it without
persistence, or with every write persisted.

Escrows only for rich accounts: an account gets one only while its available credit
is at least ``rich_factor`` times the escrow; near zero, calls take ordinary holds,
whose admission is exact where it matters.

No stall at refill: opening an escrow takes several PostgreSQL commits, and they queue
behind whatever holds the account's row (a settle journal batch holds it for its whole
transaction: up to hundreds of ms). So the lender whose loan leaves an escrow below its
low watermark (a quarter of it) has the next one opened by the book's refill thread
and returns at once; everyone keeps lending from the current escrow until the new one
is installed, which makes it current. Only a call that finds the escrow dry (the first
call of an account, a burst faster than a refill) refills itself, or waits briefly for
whoever does and then takes an ordinary hold.

Timing (``ttl_seconds`` is the escrow hold's TTL): the store lends from an escrow until
its PostgreSQL expiry minus a margin (a tenth of the TTL, at least 2 s, at most half
the TTL), and forgets it then too, so a replica whose clock runs ahead and sweeps
holds early still finds nothing lent from an expired escrow. A lend renews the escrow
(``Ledger.renew_hold``) once less than half its TTL is left, and moves the store's
deadline to the renewed expiry minus the margin, never past it.

Where the leftover goes: when a new escrow replaces one, the old one's credit not
lent to anyone is shrunk back to the account at once (``Ledger.shrink_hold``); what
its calls still running give back later is shrunk when the last of them gives back.
What stays held after that (charges recorded but not yet applied, calls whose give
back never came) is released when the escrow expires, by the hold sweeper.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Final, TypedDict, Unpack

from pricing.errors import BillingUnavailable, CreditsError, InvalidOperation, RequestRejected

from . import escrow_sql
from .escrow_memory import MemoryEscrowStore
from .escrow_redis import RedisEscrowStore
from .escrow_sql import ESCROW_REFERENCE
from .escrow_store import POOR, EscrowStore, NewEscrow, StoreUnavailable, Taken
from .ids import new_hold_id
from .service import Ledger
from .types import Hold

log = logging.getLogger("credits.escrow")

CALLS_PER_ESCROW: Final = 1000
# Below this share of an escrow left to lend, the next one is opened.
LOW_WATERMARK: Final = 0.25
WARN_EVERY: Final = 60.0
# A refill is a balance read, a hold, a renewal and a shrink; the lock outlives a slow one.
REFILL_LOCK_MS: Final = 5_000
# How long a call that found the escrow dry waits for another's refill before its own hold.
REFILL_WAIT: Final = 0.2
# Threads opening next escrows (each holds a ledger connection while it does).
REFILL_THREADS: Final = 2
# A shrink that lost a deadlock (or a serialization failure) is tried again: it is one
# transaction, rolled back whole, and takes at most what the hold still has.
SHRINK_ATTEMPTS: Final = 3
# ... after this long times the attempt number: tried at once, it locked the hold's row
# again before the transaction that won (still waking up to lock that row) did, and the
# two deadlocked a second time, the winner losing then (seen on a loaded 2-core CI machine).
SHRINK_RETRY_SECONDS: Final = 0.05


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class BookOptions(TypedDict, total=False):
    """The sizing of a book's escrows (``EscrowBook.__init__`` documents each)."""

    calls_per_escrow: int
    rich_factor: int
    poor_recheck_seconds: float


class EscrowBook:
    """Lends rich accounts' calls credit from escrow holds, through an ``EscrowStore``.

    A caller: ``lend`` (None: take an ordinary ``Ledger.hold``); after the call, charge
    the loan durably with ``Ledger.settle_escrowed(loan.id, loan.escrow_hold_id, ...)``
    (or a journal that calls it later), THEN ``give_back(loan, micro_used)``; a call
    that failed gives back with 0 and is not charged. Give back exactly once per loan.
    Thread-safe. With Redis, every replica has its own book on the same Redis.
    """

    def __init__(
        self,
        ledger: Ledger,
        store: EscrowStore,
        *,
        ttl_seconds: float,
        calls_per_escrow: int = CALLS_PER_ESCROW,
        rich_factor: int = 8,
        poor_recheck_seconds: float = 1.0,
    ) -> None:
        """``poor_recheck_seconds``: how long an account found too poor for an escrow is
        left to ordinary holds before it is looked at again (by every replica). The book
        owns ``store``: ``close`` closes it."""
        if ttl_seconds <= 0:
            raise InvalidOperation(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        if calls_per_escrow < 1 or rich_factor < 1:
            raise InvalidOperation("calls_per_escrow and rich_factor must be >= 1")
        self._ledger = ledger
        self.store = store
        self._ttl = ttl_seconds
        self._margin = min(ttl_seconds / 2, max(2.0, ttl_seconds / 10))
        self._calls = calls_per_escrow
        self._rich = rich_factor
        self._poor_ms = max(1, int(poor_recheck_seconds * 1000))
        self._warn_lock = threading.Lock()
        self._warned_at = -WARN_EVERY
        self._refiller = ThreadPoolExecutor(REFILL_THREADS, thread_name_prefix="escrow-refill")
        self._refills: dict[int, Future[None]] = {}  # account -> its refill under way here
        self._refills_lock = threading.Lock()

    @classmethod
    def on_redis(
        cls,
        ledger: Ledger,
        redis_url: str,
        *,
        prefix: str = "credits",
        ttl_seconds: float,
        **options: Unpack[BookOptions],
    ) -> EscrowBook:
        """A book on Redis (keys under ``{prefix}:escrow:``), shared by every replica."""
        return cls(ledger, RedisEscrowStore(redis_url, prefix=prefix), ttl_seconds=ttl_seconds, **options)

    @classmethod
    def in_memory(cls, ledger: Ledger, *, ttl_seconds: float, **options: Unpack[BookOptions]) -> EscrowBook:
        """A book of this process only (see the module docstring for several processes)."""
        return cls(ledger, MemoryEscrowStore(), ttl_seconds=ttl_seconds, **options)

    def wait_refills(self) -> None:
        """Return once every refill started so far by this book is done (tests, close)."""
        with self._refills_lock:
            running = list(self._refills.values())
        wait(running)

    def close(self) -> None:
        """Finish the refills under way, then close the store."""
        self._refiller.shutdown(wait=True)
        self.store.close()

    # -- lending ----------------------------------------------------------------------

    def lend(self, account_id: int, micro: int, *, reference: str = "") -> Hold | None:
        """Lend ``micro`` to one call from the account's escrow, opening one if need be.

        The loan is a ``Hold`` that exists only here: ``id`` is the call's new id,
        ``escrow_hold_id`` the escrow it came from, ``available_after`` an estimate.
        None when the account is not rich enough for an escrow, when the store or the
        ledger cannot be used right now, or for a free call: take an ordinary hold then.
        """
        if micro <= 0:
            return None
        try:
            got = self._take(account_id, micro, reference) or self._refill(account_id, micro, reference)
        except StoreUnavailable as exc:
            self._warn("lend", exc)
            return None
        except CreditsError as exc:
            # the ledger is unreachable: the caller's own hold says so properly
            log.warning("no loan for account %s: %s", account_id, exc)
            return None
        if got is None:
            return None
        loan, refill = got
        if refill and loan.escrow_hold_id is not None:
            self._refill_soon(account_id, loan.escrow_hold_id, micro)
        return loan

    @property
    def instant(self) -> bool:
        """True when the store is this process's memory: ``lend_now`` can lend."""
        return isinstance(self.store, MemoryEscrowStore)

    def lend_now(self, account_id: int, micro: int, *, reference: str = "") -> Hold | None:
        """``lend`` without waiting for anything: safe on an event loop.

        Lends only from a current escrow in process memory; its renewal or the next
        escrow, when due, are left to the refill threads. None whenever that is not
        enough (no escrow yet, dry, Redis): call ``lend`` off the loop then. A renewal
        that then finds the escrow gone (voided by hand) leaves this one loan charged
        without a reservation, like a late charge.
        """
        if micro <= 0 or not self.instant:
            return None
        now, got = self._store_take(account_id, micro)
        if got is None:
            return None
        if got.renew:
            self._in_background(self._renew, account_id, got.escrow_id, now)
        if got.refill:
            self._refill_soon(account_id, got.escrow_id, micro)
        return self._loan(account_id, micro, reference, now, got)

    def give_back_now(self, hold: Hold, micro_used: int) -> bool:
        """``give_back`` without waiting: False (nothing done) unless the store is in memory."""
        if not self.instant or hold.escrow_hold_id is None:
            return False
        shrink = self.store.give_back(
            hold.account_id, hold.escrow_hold_id, hold.amount - micro_used, _ms(self._ledger.now())
        )
        if shrink > 0:
            self._in_background(self._shrink, hold.escrow_hold_id, shrink)
        return True

    def give_back_unlent(self) -> int:
        """A stopping process's escrows stop lending and give their unlent credit back to
        their accounts now, instead of holding it until they expire; returns the µcr.

        Only escrows in this process's memory, and only those no call is borrowing from:
        a Redis escrow is shared with the other replicas.
        """
        if not isinstance(self.store, MemoryEscrowStore):
            return 0
        return sum(
            unlent
            for escrow_id, unlent in self.store.retire_idle()
            if unlent > 0 and self._shrink(escrow_id, unlent)
        )

    def unlent(self, account_id: int) -> int:
        """What the account's current escrow has not lent to any call.

        The ledger shows the whole escrow as held, yet this part is the account's to
        spend: a balance shown to a person adds it back, as the response headers do.
        """
        try:
            current = self.store.current(account_id, _ms(self._ledger.now()))
        except StoreUnavailable as exc:
            self._warn("unlent", exc)
            return 0
        return current.rem if current is not None else 0

    @property
    def lend_margin_seconds(self) -> float:
        """How long before an escrow's expiry the book stops lending from it."""
        return self._margin

    def in_background(self, job: Callable[..., object], *args: object) -> None:
        """Run ``job(*args)`` on the book's refill threads; errors are logged."""
        self._in_background(job, *args)

    def _in_background(self, job: Callable[..., object], *args: object) -> None:
        try:
            self._refiller.submit(self._quietly, job, *args)
        except RuntimeError:
            log.warning("escrow book closed: %s not run", getattr(job, "__name__", job))

    @staticmethod
    def _quietly(job: Callable[..., object], *args: object) -> None:
        try:
            job(*args)
        except Exception:  # in a pool thread nobody would see it
            log.exception("escrow background job %s failed", getattr(job, "__name__", job))

    def _store_take(self, account_id: int, micro: int) -> tuple[datetime, Taken | None]:
        """The store's atomic take (with the renew and refill claims), and when it was."""
        now = self._ledger.now()
        now_ms = _ms(now)
        renew_claim = _ms(now + timedelta(seconds=self._margin / 2))
        return now, self.store.take(account_id, micro, now_ms, renew_claim, now_ms + REFILL_LOCK_MS)

    def _take(self, account_id: int, micro: int, reference: str) -> tuple[Hold, bool] | None:
        """A loan from the current escrow, and whether this lender should open the next one."""
        now, got = self._store_take(account_id, micro)
        if got is None:
            return None
        if got.renew and not self._renew(account_id, got.escrow_id, now):
            return None
        return self._loan(account_id, micro, reference, now, got), got.refill

    def _loan(self, account_id: int, micro: int, reference: str, now: datetime, got: Taken) -> Hold:
        return Hold(
            id=new_hold_id(),
            account_id=account_id,
            amount=micro,
            status="open",
            expires_at=_at(got.exp),
            reference=reference,
            charged=None,
            created_at=now,
            resolved_at=None,
            balance_after=got.bal,
            # what the escrow has not lent is the account's to spend too
            available_after=got.avail + got.rem,
            escrow_hold_id=got.escrow_id,
        )

    def _renew(self, account_id: int, escrow_id: str, now: datetime) -> bool:
        """Renew the escrow; False when PostgreSQL no longer holds it open (then forgotten)."""
        try:
            renewed = self._ledger.renew_hold(escrow_id, self._ttl)
        except CreditsError as exc:
            # Lend on until its deadline; the claim runs out and the next lend tries again.
            log.warning("escrow %s not renewed: %s", escrow_id, exc)
            return True
        if not renewed:
            # Expired or voided in PostgreSQL: lend nothing more from it (the loan just
            # made goes with it; the call gets credit from a new escrow).
            self.store.retire_dead(account_id, escrow_id)
            return False
        expires = now + timedelta(seconds=self._ttl)
        until = expires - timedelta(seconds=self._margin)
        renew = expires - timedelta(seconds=self._ttl / 2)
        now_ms = _ms(self._ledger.now())
        if _ms(until) <= now_ms:
            self.store.retire_dead(account_id, escrow_id)
        else:
            self.store.renewed(account_id, escrow_id, _ms(until), _ms(renew), _ms(expires), now_ms)
        return True

    # -- refilling --------------------------------------------------------------------

    def _refill_soon(self, account_id: int, seen_id: str, micro: int) -> None:
        """Have the refill thread open the next escrow; one at a time per account here."""
        with self._refills_lock:
            if account_id in self._refills:
                return
            try:
                future = self._refiller.submit(self._refill_early, account_id, seen_id, micro)
            except RuntimeError:
                return  # closed: the next dry lend refills, if any comes
            self._refills[account_id] = future
        # outside the lock: it runs at once when the refill is done already
        future.add_done_callback(lambda _: self._refill_done(account_id))

    def _refill_done(self, account_id: int) -> None:
        with self._refills_lock:
            del self._refills[account_id]

    def _refill_early(self, account_id: int, seen_id: str, micro: int) -> None:
        """Open the next escrow while ``seen_id`` still lends (a loan left it below the low
        watermark). In the refill thread: nothing may escape (nobody would see it), and
        the current escrow lends on whatever happens here."""
        try:
            token = uuid.uuid4().hex
            if self.store.acquire(account_id, token, REFILL_LOCK_MS) != token:
                return
            mark = ""
            try:
                current = self.store.current(account_id, _ms(self._ledger.now()))
                # replaced meanwhile (a dry refill), or forgotten (the next lend refills)
                if current is not None and current.id == seen_id:
                    _, poor = self._open_escrow(account_id, micro, lent=0)
                    mark = POOR if poor else ""
            finally:
                self._release(account_id, token, mark)
        except StoreUnavailable as exc:
            self._warn("refill", exc)
        except CreditsError as exc:
            log.warning("no next escrow for account %s: %s", account_id, exc)
        except Exception:
            log.exception("no next escrow for account %s", account_id)

    def _refill(self, account_id: int, micro: int, reference: str) -> tuple[Hold, bool] | None:
        """The escrow is dry: refill it (or wait for whoever does) and lend from the new one."""
        token = uuid.uuid4().hex
        holder = self.store.acquire(account_id, token, REFILL_LOCK_MS)
        if holder == POOR:
            return None
        if holder != token:
            return self._wait_for_refill(account_id, micro, reference)
        mark = ""
        try:
            # Another replica may have refilled between our miss and our lock.
            got = self._take(account_id, micro, reference)
            if got is not None:
                return got
            escrow, poor = self._open_escrow(account_id, micro, lent=micro)
            mark = POOR if poor else ""
            if escrow is None:
                return None
            loan = self._loan(
                account_id,
                micro,
                reference,
                self._ledger.now(),
                Taken(
                    escrow.id,
                    escrow.amount - micro,
                    renew=False,
                    refill=False,
                    exp=_ms(escrow.expires_at),
                    avail=escrow.available_after,
                    bal=escrow.balance_after,
                ),
            )
            return loan, False
        finally:
            self._release(account_id, token, mark)

    def _release(self, account_id: int, token: str, mark: str) -> None:
        try:
            self.store.release(account_id, token, mark, self._poor_ms)
        except StoreUnavailable as exc:
            self._warn("refill lock release", exc)  # it runs out by itself

    def _wait_for_refill(self, account_id: int, micro: int, reference: str) -> tuple[Hold, bool] | None:
        deadline = time.monotonic() + REFILL_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.005)
            got = self._take(account_id, micro, reference)
            if got is not None:
                return got
            if self.store.holder(account_id) in (None, POOR):
                return None  # refilled and emptied already, refused, or failed
        return None

    def _open_escrow(self, account_id: int, micro: int, *, lent: int) -> tuple[Hold | None, bool]:
        """Place a new escrow for ``micro``-sized calls and make it current, with ``lent``
        (0, or the caller's loan) lent from it already; (its hold or None, poor?)."""
        chunk = micro * self._calls
        try:
            if self._ledger.balance(account_id).available < self._rich * chunk:
                return None, True
            escrow = self._ledger.hold(account_id, chunk, ttl_seconds=self._ttl, reference=ESCROW_REFERENCE)
            # A synchronous commit before the store lends from it: with ``async_holds``
            # the hold's own commit may not be flushed yet, and this one flushes it too.
            self._ledger.renew_hold(escrow.id, self._ttl)
        except RequestRejected as exc:
            log.debug("no escrow for account %s: %s", account_id, exc)
            return None, True
        except CreditsError as exc:
            log.warning("no escrow for account %s: %s", account_id, exc)
            return None, False
        now_ms = _ms(self._ledger.now())
        until = _ms(escrow.expires_at - timedelta(seconds=self._margin))
        if until <= now_ms:
            self._ledger.void(escrow.id, "escrow expired before it was lent")
            return None, False
        # If this fails the escrow may or may not be in the store: it is left to expire.
        old_id, shrink = self.store.install(
            account_id,
            NewEscrow(
                id=escrow.id,
                rem=chunk - lent,
                inf=1 if lent else 0,
                low=int(chunk * LOW_WATERMARK),
                until=until,
                renew=_ms(escrow.expires_at - timedelta(seconds=self._ttl / 2)),
                exp=_ms(escrow.expires_at),
                avail=escrow.available_after,
                bal=escrow.balance_after,
            ),
            now_ms,
        )
        if old_id and shrink > 0:
            self._shrink(old_id, shrink)
        return escrow, False

    # -- giving back ------------------------------------------------------------------

    def give_back(self, hold: Hold, micro_used: int) -> None:
        """Return what a loan did not use (``micro_used``: its charge, 0 if not charged).

        Call it once per loan, after the charge is durable. A call that cost more than
        it was lent takes the difference from what the escrow has left, so the store
        never counts credit the charges have already taken. Never raises for the store:
        if it is unreachable the credit stays in the escrow until the escrow expires.
        """
        if hold.escrow_hold_id is None:
            raise InvalidOperation(f"hold {hold.id} was not lent from an escrow")
        try:
            shrink = self.store.give_back(
                hold.account_id, hold.escrow_hold_id, hold.amount - micro_used, _ms(self._ledger.now())
            )
        except StoreUnavailable as exc:
            self._warn("give back", exc)
            return
        if shrink > 0:
            self._shrink(hold.escrow_hold_id, shrink)

    def _shrink(self, escrow_id: str, micro: int) -> bool:
        """Give ``micro`` of the escrow's hold back to its account; False: it stays held."""
        for attempt in range(1, SHRINK_ATTEMPTS + 1):
            try:
                self._ledger.shrink_hold(escrow_id, micro)
                return True
            except BillingUnavailable as exc:
                if attempt < SHRINK_ATTEMPTS and escrow_sql.lock_conflict(exc):
                    log.info(
                        "escrow %s shrink lost a lock conflict (%s), trying again", escrow_id, exc.reason
                    )
                    time.sleep(SHRINK_RETRY_SECONDS * attempt)
                    continue
                failure: CreditsError = exc
            except CreditsError as exc:
                failure = exc
            log.warning("escrow %s keeps %d µcr held until it expires: %s", escrow_id, micro, failure)
            return False
        return False

    def _warn(self, what: str, exc: StoreUnavailable) -> None:
        now = time.monotonic()
        with self._warn_lock:
            if now - self._warned_at < WARN_EVERY:
                return
            self._warned_at = now
        log.warning(
            "escrow store: %s failed (%s): calls take ordinary holds; lent credit stays "
            "held until its escrow expires (warned once a minute)",
            what,
            exc,
        )

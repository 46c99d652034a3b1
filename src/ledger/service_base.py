"""The ``Ledger`` facade's core: engines, units of work, the clock, lifecycle, reads and job leases."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from pricing.errors import AccountNotFound, InvalidOperation

from . import audit, batch, hotpath, jobs, queries, settle_batch_function, settle_function
from .engine import UnitOfWork, make_engine
from .tables import UsageEventRow, metadata
from .types import Balance, Entry, UsageEvent

T = TypeVar("T")
K = TypeVar("K")

_UNSETTLED = text(
    """
SELECT v.id FROM unnest(CAST(:ids AS text[])) AS v(id)
WHERE NOT EXISTS (SELECT 1 FROM usage_events AS u WHERE u.hold_id = v.id)
"""
)


class LedgerBase:
    """What every part of the ``Ledger`` facade shares: engines, units of work, clock."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 5,
        pool_timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
        group_commit: bool = False,
        group_commit_max: int = batch.MAX_BATCH,
        async_holds: bool = False,
    ) -> None:
        """``group_commit=True``: ``hold`` and ``settle`` from many threads share commits.

        One writer thread then runs the queued hot-path operations (up to
        ``group_commit_max`` at a time) in one transaction, one SAVEPOINT each, and
        commits once; every caller returns after the commit that holds its operation.
        Same results, exceptions and invariants as without it (see ``ledger.batch``).
        Ignored on SQLite older than 3.35, which has no hot path.

        ``async_holds=True`` (PostgreSQL): a hold's commit does not wait for its WAL flush
        (``synchronous_commit=off`` on the connections that place holds). A hold is a
        reservation, not money: if PostgreSQL itself crashes, holds of the last few
        hundred milliseconds may vanish, and their calls are then charged without a hold
        (``settle`` falls back to ``settle_unheld``, once, by the call's id), so the worst
        case is an account going below zero by the calls in flight at the crash. Every
        charge still waits for its own flush (which also flushes every earlier hold).
        """
        self._engine = make_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout
        )
        self._uow = UnitOfWork(self._engine)
        self._hold_engine: Engine | None = None
        self._hold_uow = self._uow
        if async_holds and self._engine.dialect.name == "postgresql":
            self._hold_engine = make_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                synchronous_commit=False,
            )
            self._hold_uow = UnitOfWork(self._hold_engine)
        self._clock = clock or (lambda: datetime.now(UTC))
        # Core statements with RETURNING (ledger.hotpath) unless SQLite is too old for them.
        self._fast = self._engine.dialect.name == "postgresql" or hotpath.SQLITE_HAS_RETURNING
        # PostgreSQL settles through ``settle_function``'s functions until a call finds one missing.
        self._settle_function = self._engine.dialect.name == "postgresql"
        # and books settle journal batches through ``settle_batch_function`` until a batch
        # finds it missing (the journal turns this off then)
        self.batch_function = self._engine.dialect.name == "postgresql"
        self._batch = (
            batch.GroupCommitter(self._engine, max_batch=group_commit_max)
            if group_commit and self._fast
            else None
        )

    # -- lifecycle ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with any password masked: safe for logs."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def create_schema(self) -> None:
        """Create missing tables (tests, demos); live databases use ``ledger.migrate.upgrade``."""
        with self._uow() as session:
            metadata.create_all(session.connection())
            if self.dialect == "postgresql":
                session.connection().exec_driver_sql(settle_function.create_sql())
                session.connection().exec_driver_sql(settle_batch_function.create_sql())

    @property
    def group_commit(self) -> batch.GroupCommitter | None:
        """The group-commit writer when it is on (its ``batches`` / ``operations`` counts)."""
        return self._batch

    def dispose(self) -> None:
        """Stop the group-commit writer (after what is queued) and close the connections."""
        if self._batch is not None:
            self._batch.close()
        self._engine.dispose()
        if self._hold_engine is not None:
            self._hold_engine.dispose()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    def now(self) -> datetime:
        """The ledger's clock (injected by tests)."""
        return self._clock()

    def core_transaction(self, *, flush: bool = True) -> AbstractContextManager[Connection]:
        """One Core transaction for many hot-path operations (``ledger.journal``).

        ``flush=False``: on a ledger with ``async_holds``, the commit does not wait for its
        WAL flush either; only for writes kept elsewhere until ``sync_point`` (the settle
        journal keeps every charge on disk until it has checked them in the ledger).
        Outages surface as ``BillingUnavailable``; nothing is committed unless the block ends.
        """
        return self._uow.core() if flush else self._hold_uow.core()

    def core_statement(self, *, flush: bool = True) -> AbstractContextManager[Connection]:
        """ONE Core statement as its own transaction (on PostgreSQL one round trip, no
        ``BEGIN`` or ``COMMIT``: ``UnitOfWork.single``); ``flush`` as ``core_transaction``."""
        return self._uow.single() if flush else self._hold_uow.single()

    def sync_point(self) -> None:
        """Return once every commit made so far, async ones included, is flushed to disk.

        On PostgreSQL a synchronous commit that writes a commit record (it takes a
        transaction id) flushes the WAL up to itself, and so everything before it.
        """
        with self._uow.core() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT txid_current()"))

    def unsettled(self, hold_ids: Sequence[str]) -> set[str]:
        """The hold ids in ``hold_ids`` that have no usage event (not charged) yet."""
        found: set[str] = set()
        with self._uow.core() as conn:
            if self.dialect == "postgresql":
                # one anti-join returning only the missing ids (usually none): a settle
                # journal's segment asks for 50,000 at a time
                return {row[0] for row in conn.execute(_UNSETTLED, {"ids": list(hold_ids)})}
            for start in range(0, len(hold_ids), 1000):
                chunk = list(hold_ids[start : start + 1000])
                found.update(
                    conn.execute(
                        select(UsageEventRow.hold_id).where(UsageEventRow.hold_id.in_(chunk))
                    ).scalars()
                )
        return set(hold_ids) - found

    def _each_due(
        self,
        due: Callable[[Session], Sequence[K]],
        apply: Callable[[Session, K], bool],
        batch_size: int,
    ) -> int:
        """Apply ``apply`` to every due item, one transaction each, so one bad row stalls nothing else.

        Stops when a page comes back short, or when a full page changed nothing (the same
        rows would come back forever).
        """
        count = 0
        while True:
            with self._uow() as session:
                batch = due(session)
            done = 0
            for item in batch:
                with self._uow() as session:
                    if apply(session, item):
                        done += 1
            count += done
            if len(batch) < batch_size or done == 0:
                return count

    # -- job leases -----------------------------------------------------------

    def run_exclusive(
        self, name: str, fn: Callable[[], T], *, lease_seconds: float = 60, keep_lease: bool = False
    ) -> T | None:
        """Run ``fn`` unless another holder (another replica) has the lease ``name``; then None.

        The lease is given back when ``fn`` returns or raises; with ``keep_lease`` it is kept
        until it runs out, so the job runs at most once per ``lease_seconds`` across
        replicas. Pick ``lease_seconds`` longer than ``fn`` runs: an expired lease can be taken.
        """
        if not name or len(name) > 128:
            raise InvalidOperation("a job name must be 1 to 128 characters")
        if lease_seconds <= 0:
            raise InvalidOperation(f"lease_seconds must be > 0, got {lease_seconds!r}")
        holder = uuid.uuid4().hex
        with self._uow() as session:
            if not jobs.acquire(session, name, holder, lease_seconds=lease_seconds, now=self._clock()):
                return None
        try:
            return fn()
        finally:
            if not keep_lease:
                with self._uow() as session:
                    jobs.release(session, name, holder, now=self._clock())

    # -- reading --------------------------------------------------------------

    def balance(self, account_id: int) -> Balance:
        # One SELECT; on PostgreSQL in autocommit mode (one round trip, no BEGIN/COMMIT).
        with self._uow.single() as conn:
            found = hotpath.balance(conn, account_id)
        if found is None:
            raise AccountNotFound(str(account_id))
        return found

    def escrowed(self, account_id: int) -> int:
        """The part of the account's held credit that is escrows (``ledger.escrow``)."""
        with self._uow() as session:
            return queries.escrowed(session, account_id)

    def history(self, account_id: int, limit: int = 50) -> list[Entry]:
        """The account's entries, newest first."""
        with self._uow() as session:
            return queries.history(session, account_id, limit)

    def usage(self, account_id: int, limit: int = 50) -> list[UsageEvent]:
        """The account's usage events, newest first."""
        with self._uow() as session:
            return queries.usage(session, account_id, limit)

    def audit(self) -> list[str]:
        """Every violated invariant as a readable line; empty when the books balance."""
        with self._uow() as session:
            return audit.run(session)

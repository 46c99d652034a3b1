"""Group commit: one writer thread runs many callers' hot-path operations per transaction.

Opt-in (``Ledger(url, group_commit=True)``). Callers of ``hold`` and ``settle`` hand
their fast-path operation (a function of a Core connection) to the ledger's one
``GroupCommitter`` and wait. The writer thread takes whatever is queued (up to
``max_batch`` operations; it never waits for more), runs them in ONE transaction,
commits once, and only then hands every caller its result or exception.

An operation that raises must roll back only itself. The writer first runs the batch
without savepoints (the common case: nothing raises, and a SAVEPOINT / RELEASE pair
would cost two more round trips per operation on PostgreSQL). If any operation raises,
the whole transaction is rolled back (nothing was written) and the batch runs again with
each operation inside its own SAVEPOINT, so the failing one rolls back alone and the
others commit. Running an operation twice is safe: it only reads and writes the
database, and its first run was rolled back. A caller
therefore returns only after the commit that contains its operation: the durability
promise is unchanged, the batch only shares the commit (one WAL flush instead of N).

What stays the same as one transaction per call:

- the statements: the operations are the very ``ledger.hotpath`` functions the
  unbatched path runs, so the conditional ``UPDATE`` still refuses a hold the
  database says does not fit, and ``UPDATE holds ... WHERE status = 'open'`` is still
  the exactly-once check (two settles of one hold in one batch: the second sees the
  first's write and matches nothing);
- the exceptions: what an operation raises (``IntegrityError``, or a database outage
  as ``BillingUnavailable``) reaches its own caller, who handles it as before; the
  rare paths (explaining a refusal, settling an already settled hold) run in the
  caller's thread after the commit, as before;
- if the writer's connection fails (a checkout, a savepoint, the commit), every
  caller of that batch gets ``BillingUnavailable``: none of it was committed.

Locks (PostgreSQL): a batch keeps the row locks of its earlier operations while it runs
the later ones, so it could close a wait cycle no single operation could (a ``void``
that holds hold H and waits for the account the batch has locked, while a later settle
of H in the batch waits for H). So after the first operation the batch sets a short
``lock_timeout``; an operation that would wait longer rolls back its savepoint and is
handed back to its caller as ``RUN_ALONE``, and the caller runs it the unbatched way
(own transaction, no timeout) once the batch has committed and released its locks.
Nobody else is ever aborted by the batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Connection, Engine, exc, text

from pricing.errors import BillingUnavailable

from .engine import is_unavailable, unavailable_reason
from .queued import take_queued

MAX_BATCH = 64
# How long a later operation of a batch may wait for a row lock before it is handed
# back to run on its own (see the module docstring).
LOCK_TIMEOUT_MS = 50
# SQLSTATEs that mean "gave up waiting for a lock": lock_not_available, deadlock_detected.
_LOCK_GIVE_UP = ("55P03", "40P01")


class _RunAlone:
    """Sentinel result: this operation must be run outside the batch, by its caller."""

    def __repr__(self) -> str:
        return "RUN_ALONE"


RUN_ALONE: Any = _RunAlone()

Op = Callable[[Connection], Any]
_STOP = object()
_SET_LOCK_TIMEOUT = text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")


class GroupCommitter:
    """One writer thread per ``Ledger``: queued operations, one transaction per batch."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._engine = engine
        self._dialect = engine.dialect.name
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ledger-group-commit", daemon=True)
        self._thread.start()
        # Figures for the benchmark: batches committed and operations they carried.
        self.batches = 0
        self.operations = 0

    def submit(self, op: Op) -> Any:
        """Run ``op(conn)`` in the next batch; return its result after the batch commits.

        Raises what ``op`` raised (a database outage as ``BillingUnavailable``). May
        return ``RUN_ALONE``: the caller must then run the operation unbatched (also
        after ``close``, so a disposed ledger behaves as one without group commit:
        its engine hands out new connections on demand).
        """
        future: Future[Any] = Future()
        with self._close_lock:
            if self._closed:
                return RUN_ALONE
            self._queue.put((op, future))
        return future.result()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer after it has run everything queued so far."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = take_queued(self._queue, batch, self._max_batch, _STOP)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[tuple[Op, Future[Any]]]) -> None:
        try:
            outcomes = self._execute([op for op, _future in batch])
        except BaseException as error:  # every caller must hear of it
            outcomes = [(False, self._as_unavailable(error)) for _ in batch]
        self.batches += 1
        self.operations += len(batch)
        for (_op, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _execute(self, ops: list[Op]) -> list[tuple[bool, Any]]:
        """Run ``ops`` in one transaction and commit; raises only when the batch failed."""
        with self._engine.connect() as conn:
            transaction = conn.begin()
            if len(ops) == 1:
                # Nothing to isolate it from: exactly the unbatched transaction.
                try:
                    result = ops[0](conn)
                except Exception as error:  # handed to its caller
                    transaction.rollback()
                    if isinstance(error, exc.DBAPIError) and is_unavailable(error, self._dialect):
                        raise
                    return [(False, error)]
                transaction.commit()
                return [(True, result)]
            results = self._optimistic(conn, ops)
            if results is not None:
                transaction.commit()
                return [(True, result) for result in results]
            # Some operation raised and the transaction was rolled back: nothing of this
            # batch is written. Run it again, each operation in its own SAVEPOINT.
            transaction = conn.begin()
            outcomes: list[tuple[bool, Any]] = []
            for index, op in enumerate(ops):
                outcomes.append(self._one(conn, op))
                if index == 0:
                    self._limit_lock_waits(conn)
            # A COMMIT that fails raises: no operation of the batch was committed.
            transaction.commit()
            return outcomes

    def _optimistic(self, conn: Connection, ops: list[Op]) -> list[Any] | None:
        """Run every operation without savepoints; None (rolled back) if any raised.

        The common case (nothing raises) then costs no SAVEPOINT / RELEASE round trips.
        The operations only read and write the database, so running them again after
        the rollback is the same as running them once.
        """
        results: list[Any] = []
        try:
            for index, op in enumerate(ops):
                results.append(op(conn))
                if index == 0:
                    self._limit_lock_waits(conn)
        except Exception as error:
            # If the connection itself is gone this raises too, failing the whole batch.
            conn.rollback()
            if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
                raise
            return None
        return results

    def _limit_lock_waits(self, conn: Connection) -> None:
        if self._dialect == "postgresql":
            conn.execute(_SET_LOCK_TIMEOUT)

    def _one(self, conn: Connection, op: Op) -> tuple[bool, Any]:
        savepoint = conn.begin_nested()
        try:
            result = op(conn)
        except Exception as error:  # handed to its caller
            # If the connection itself is gone this raises too, failing the whole batch.
            savepoint.rollback()
            if isinstance(error, exc.DBAPIError):
                if _gave_up_on_lock(error):
                    return True, RUN_ALONE
                if is_unavailable(error, self._dialect):
                    # The savepoint rolled back, so the connection is fine: this
                    # operation alone failed (a statement timeout, say).
                    return False, self._as_unavailable(error)
            return False, error
        savepoint.commit()
        return True, result

    def _as_unavailable(self, error: BaseException) -> BaseException:
        if isinstance(error, BillingUnavailable):
            return error
        if isinstance(error, exc.SQLAlchemyError) and is_unavailable(error, self._dialect):
            unavailable = BillingUnavailable(unavailable_reason(error))
        else:
            unavailable = BillingUnavailable(f"group commit failed: {unavailable_reason(error)}")
        unavailable.__cause__ = error
        return unavailable


def _gave_up_on_lock(error: exc.DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) in _LOCK_GIVE_UP

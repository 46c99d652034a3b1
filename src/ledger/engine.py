"""Engine creation and the unit of work (one transaction per ledger operation)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from pricing.errors import BillingUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000

# SQLite errors that mean "the store is not usable right now", as opposed to a bug
# (pysqlite reports "no such table" as OperationalError too, and that must surface).
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "database or disk is full")


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; a bare ``postgresql://`` means psycopg 3, the driver this package ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 5,
    pool_timeout: float = 10.0,
    synchronous_commit: bool = True,
) -> Engine:
    """``synchronous_commit=False`` (PostgreSQL only): this engine's commits return before
    their WAL record is flushed. Only for writes a crash may lose (see ``Ledger.hold``)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(
        parsed,
        connect_args={} if synchronous_commit else {"options": "-c synchronous_commit=off"},
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        # No pool_pre_ping: it costs a round trip on every checkout. Connections are
        # recycled before a server or NAT idle timeout would drop them; a connection that
        # died anyway (a database restart) fails its one call with BillingUnavailable, and
        # SQLAlchemy's disconnect handling then invalidates every older pooled connection,
        # so the next call gets a fresh one.
        pool_recycle=1800,
        # The conditional UPDATE of a hold relies on READ COMMITTED re-checking its WHERE
        # clause after the row lock; pin it so a server default cannot change that.
        isolation_level="READ COMMITTED",
    )


def _sqlite_engine(url: URL) -> Engine:
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        # One shared connection, or every checkout would see a different empty database.
        kwargs["poolclass"] = StaticPool
    else:
        # Last in, first out: the settle journal's writer gets back the connection it
        # used for its previous batch, whose page cache is still good. Handed round the
        # pool in turn, a connection found the database changed by the others since its
        # last use (WAL mode) and dropped its cache: 1.6-2 page reads per charge, none.
        kwargs["pool_use_lifo"] = True
    engine = create_engine(url, **kwargs)

    # The documented pysqlite recipe: stop the driver's own deferred BEGIN and issue
    # BEGIN IMMEDIATE ourselves, so a transaction takes the write lock up front and two
    # writers serialize instead of failing with "database is locked" on upgrade.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_unavailable(error: exc.DBAPIError | exc.SQLAlchemyError, dialect: str) -> bool:
    """True when ``error`` says the database cannot be reached or used right now."""
    if isinstance(error, exc.TimeoutError | exc.DisconnectionError):
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, exc.InterfaceError):
        return True
    if isinstance(error, exc.OperationalError):
        if dialect == "sqlite":
            text = str(error.orig).lower()
            return any(marker in text for marker in _SQLITE_UNAVAILABLE)
        # psycopg raises OperationalError for lost connections, lock and statement
        # timeouts, admin shutdown: all "retry later", none a bug in our SQL.
        return True
    return False


def unavailable_reason(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip().splitlines()
    return text[0] if text else type(error).__name__


class UnitOfWork:
    """Hands out one session per operation, wrapped in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        with self._unavailable_as_billing(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def core(self) -> Iterator[Connection]:
        """A Core connection in one transaction (the hot path: no ORM unit of work)."""
        with self._unavailable_as_billing(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def single(self) -> Iterator[Connection]:
        """A Core connection for ONE statement that is its own transaction.

        On PostgreSQL the connection is in autocommit mode: no ``BEGIN`` and no ``COMMIT``
        round trip, the statement commits by itself (all or nothing). On SQLite, where a
        round trip is a function call, it is the usual ``BEGIN IMMEDIATE`` transaction.
        Use it only for one statement: two statements here are two transactions.
        """
        with self._unavailable_as_billing():
            if self.dialect != "postgresql":
                with self.engine.begin() as connection:
                    yield connection
                return
            with self.engine.connect() as connection:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def _unavailable_as_billing(self) -> Iterator[None]:
        try:
            yield
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError) as error:
            if is_unavailable(error, self.dialect):
                raise BillingUnavailable(unavailable_reason(error)) from error
            raise

"""Small helpers shared by the ledger tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import Connection, create_engine, text

from ledger import Ledger, UsageRecord
from ledger import journal as journal_module

CR = 1_000_000  # one credit in µcr

# For checks that do not depend on the database: run them on SQLite only (saves a
# PostgreSQL database per test). Overrides the parameters of the ``db_url`` fixture.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
# For PostgreSQL behaviour (locks, server-side functions): its half of ``db_url`` alone.
postgres_only = pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

USAGE = UsageRecord(
    model="gpt-4o",
    provider="openai",
    call_type="acompletion",
    api_key_hash="ab" * 32,
    user_id="u1",
    team_id="t1",
    end_user_id="e1",
    tokens_in=10,
    tokens_out=20,
    provider_cost_usd=Decimal("0.000225"),
    markup_rule="default",
    catalog_version="abc123",
)


def funded(ledger: Ledger, micro: int, *, external_id: str = "alice", overdraft_limit: int = 0) -> int:
    """A new user account holding ``micro`` µcr in one purchase grant; returns its id."""
    account = ledger.open_account("user", external_id, tier="pro", overdraft_limit=overdraft_limit)
    if micro:
        ledger.grant(account.id, micro, source="purchase", reason="test funds")
    return account.id


def raw_rows(url: str, table: str) -> list[tuple[object, ...]]:
    """Every row of a table, read around the ledger (for checks on what is really stored)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))]
    finally:
        engine.dispose()


LOCK_ACCOUNT = text("UPDATE accounts SET updated_at = updated_at WHERE id = :a")


def until_a_lock_is_awaited(probe: Connection) -> None:
    """Return once a session of this database waits for a row lock (the statement under test)."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(6_000):
        if probe.execute(waiting).scalar_one():
            return
        threading.Event().wait(0.005)
    pytest.fail("the statement under test never waited for the account's lock")


def fake_fsyncs(monkeypatch: pytest.MonkeyPatch, fsync: Callable[[int], None]) -> Callable[[int], None]:
    """Route the journal's fsyncs through ``fsync``: those a pool thread runs
    (``os.fdatasync``) and those timed on the caller's thread, which keep the
    interpreter lock (``ledger.disk_sync``). Returns the real ``os.fdatasync``."""
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", fsync)
    monkeypatch.setattr(journal_module, "fdatasync_keeping_lock", fsync)
    return real

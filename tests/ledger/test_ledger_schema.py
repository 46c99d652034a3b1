"""schema.sql, create_all and the Alembic migrations describe one and the same schema."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from ledger import Ledger, migrate
from ledger.schema_sql import render
from ledger.tables import metadata

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "schema.sql"


def differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), metadata))
    finally:
        engine.dispose()


def test_schema_sql_is_what_the_models_generate() -> None:
    assert SCHEMA_SQL.read_text() == render(), (
        "schema.sql is stale: run `python -m ledger.schema_sql > schema.sql`"
    )


@pytest.mark.postgres
def test_schema_sql_builds_the_model_schema_on_postgres(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(SCHEMA_SQL.read_text())
    finally:
        engine.dispose()
    assert differences(pg_url) == []
    # And the ledger works on it.
    book = Ledger(pg_url)
    try:
        account = book.open_account("user", "a", tier="free", welcome_micro=5)
        assert book.balance(account.id).balance == 5
        assert book.audit() == []
    finally:
        book.dispose()


def test_create_all_matches_on_sqlite(sqlite_url: str) -> None:
    Ledger(sqlite_url).create_schema()
    assert differences(sqlite_url) == []


def test_the_head_revision_in_code_is_the_newest_migration() -> None:
    assert migrate.head() == migrate.HEAD_REVISION


def test_a_database_at_head_is_checked_without_loading_alembic(sqlite_url: str) -> None:
    assert migrate.stored_revision(sqlite_url) is None  # no alembic_version table yet
    migrate.ensure_schema(sqlite_url)
    assert migrate.stored_revision(sqlite_url) == migrate.HEAD_REVISION
    # a second start, in a process of its own: the check alone, Alembic not imported
    probe = (
        "import sys; from ledger.migrate import ensure_schema; "
        f"ensure_schema({sqlite_url!r}); print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    assert differences(sqlite_url) == []


def test_migrations_reach_the_model_schema(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()
    assert differences(db_url) == []
    migrate.upgrade(db_url)  # already at head: nothing to do

    book = Ledger(db_url)
    try:
        account = book.open_account("user", "a", tier="free", welcome_micro=5)
        hold = book.hold(account.id, 5, ttl_seconds=60)
        book.void(hold.id)
        assert book.audit() == []
    finally:
        book.dispose()

    migrate.downgrade(db_url, "base")
    engine = create_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_every_table_has_its_indexes() -> None:
    names = {ix.name for table in metadata.tables.values() for ix in table.indexes}
    assert {
        "ix_entries_account_id_id",
        "ix_usage_events_account_id_created_at",
        "ix_holds_status_expires_at",
        "ix_grants_account_id_priority_expires_at",
    } <= names


def test_migration_0002_keeps_existing_rows(db_url: str) -> None:
    """Accounts, keys and usage written under 0001 come through 0002 with sensible values."""
    migrate.upgrade(db_url, "0001")
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO accounts (kind, external_id, tier, status, overdraft_limit, balance, held,"
                    " debt, created_at, updated_at) VALUES ('user', 'old', 'free', 'active', 0, 0, 0, 0,"
                    " '2026-01-05 10:00:00', '2026-01-05 10:00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO api_keys (key_hash, key_prefix, account_id, created_at)"
                    " SELECT 'h', 'sk-cr-x', id, created_at FROM accounts"
                )
            )
        migrate.upgrade(db_url)
        assert differences(db_url) == []
        book = Ledger(db_url)
        try:
            (account,) = book.list_accounts()
            assert account.period_anchor == account.created_at == datetime(2026, 1, 5, 10, tzinfo=UTC)
            assert (account.byok, account.pending_tier) == (False, None)
            key = book.get_key_by_hash("h")
            assert key is not None and key.byok is False
            book.grant(account.id, 5, source="purchase")
            assert book.audit() == []
        finally:
            book.dispose()
        # The CHECK constraints survived the table rebuilds (SQLite batch mode).
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE accounts SET kind = 'bogus'"))
        migrate.downgrade(db_url, "0001")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT external_id FROM accounts")).scalar_one() == "old"
    finally:
        engine.dispose()

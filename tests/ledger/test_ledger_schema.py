"""schema.sql, create_all and the Alembic migrations describe one and the same schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

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

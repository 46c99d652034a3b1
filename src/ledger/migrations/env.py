"""Alembic environment for the ledger; driven by ``ledger.migrate`` (URL in config.attributes)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from ledger.tables import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through ledger.migrate.upgrade(url)")
    return str(url)


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            # Batch mode lets later migrations alter SQLite tables (which lack ALTER COLUMN).
            context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

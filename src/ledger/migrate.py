"""Alembic migrations of the ledger, run from code (no alembic.ini needed).

``upgrade(url)`` brings a database to the newest schema; the migration scripts
ship inside the package (``ledger/migrations``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .engine import make_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Through attributes, not set_main_option: ConfigParser would choke on a '%' in a password.
    cfg.attributes["url"] = normalize_url(url).render_as_string(hide_password=False)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(config(url), revision)


def head() -> str | None:
    return ScriptDirectory.from_config(config("sqlite://")).get_current_head()


def current(url: str) -> str | None:
    """The revision the database is at, or None for an unmanaged database."""
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def ensure_schema(url: str) -> None:
    """Create or upgrade the schema of a database the plugin owns (the embedded SQLite).

    A database whose tables were made by ``Ledger.create_schema`` (the models as they
    are now, so at head) carries no Alembic version yet: it is stamped at head rather
    than created twice.
    """
    if current(url) is None and has_ledger_tables(url):
        command.stamp(config(url), "head")
    upgrade(url)


def has_ledger_tables(url: str) -> bool:
    from sqlalchemy import inspect

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        return inspect(engine).has_table("accounts")
    finally:
        engine.dispose()

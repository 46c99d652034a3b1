"""Alembic migrations of the ledger, run from code (no alembic.ini needed).

``upgrade(url)`` brings a database to the newest schema; the migration scripts
ship inside the package (``ledger/migrations``).

Alembic is imported only when a migration runs: with Mako and Pygments it added about
9 MB to every proxy process that imported this module, for a check at start that finds
the database at ``HEAD_REVISION`` on every start after the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from .engine import make_engine, normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# the newest script in migrations/versions; a test checks it against Alembic's head
HEAD_REVISION = "0004"


def config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Through attributes, not set_main_option: ConfigParser would choke on a '%' in a password.
    cfg.attributes["url"] = normalize_url(url).render_as_string(hide_password=False)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(config(url), revision)


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config("sqlite://")).get_current_head()


def current(url: str) -> str | None:
    """The revision the database is at, or None for an unmanaged database."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def stored_revision(url: str) -> str | None:
    """The revision in the database's ``alembic_version`` table, read without Alembic;
    None when there is no such table (or not exactly one row in it)."""
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return None
    finally:
        engine.dispose()
    return str(rows[0][0]) if len(rows) == 1 else None


def ensure_schema(url: str) -> None:
    """Create or upgrade the schema of a database the plugin owns (the embedded SQLite).

    A database whose tables were made by ``Ledger.create_schema`` (the models as they
    are now, so at head) carries no Alembic version yet: it is stamped at head rather
    than created twice. A database already at ``HEAD_REVISION`` is left as it is
    without loading Alembic.
    """
    revision = stored_revision(url)
    if revision == HEAD_REVISION:
        return
    from alembic import command

    if revision is None and has_ledger_tables(url):
        command.stamp(config(url), "head")
    upgrade(url)


def has_ledger_tables(url: str) -> bool:
    from sqlalchemy import inspect

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        return inspect(engine).has_table("accounts")
    finally:
        engine.dispose()

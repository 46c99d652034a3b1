"""``INSERT ... ON CONFLICT`` for both databases the ledger runs on.

PostgreSQL and SQLite (3.24+) share the upsert syntax, but SQLAlchemy builds it
with each dialect's own ``insert``; this picks the right one for a session.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pricing.errors import InvalidOperation


def insert(session: Session, table: Any) -> postgresql.Insert | sqlite.Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise InvalidOperation(f"the ledger has no upsert for the {dialect} database")

"""Print the ledger's PostgreSQL DDL: ``python -m ledger.schema_sql > schema.sql``.

Tables, indexes and the settle functions (``ledger.settle_function``,
``ledger.settle_batch_function``).

``schema.sql`` is generated, never edited by hand; a test regenerates it and
compares, so it cannot drift from the models.
"""

from __future__ import annotations

import sys

from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from . import settle_batch_function, settle_function
from .tables import metadata

HEADER = """\
-- litellm-credits ledger schema for PostgreSQL.
-- Generated from the SQLAlchemy models by `python -m ledger.schema_sql`; do not edit.
-- Live databases are better managed with the migrations: `ledger.migrate.upgrade(url)`.
"""


def render() -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    parts = [HEADER]
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";\n")
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";\n")
    # the one-round-trip settles (``ledger.settle_function``), as migration 0003 creates them
    parts.append(settle_function.create_sql())
    # the settle journal's batch in one statement, as migration 0004 creates it
    parts.append(settle_batch_function.create_sql())
    text = "\n".join(parts)
    # SQLAlchemy's DDL compiler leaves a space before each newline; keep the file clean.
    return "\n".join(line.rstrip() for line in text.split("\n"))


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()

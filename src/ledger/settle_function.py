"""PostgreSQL: a settle in ONE round trip, through a server-side function.

``hotpath.settle`` is two statements in one transaction on PostgreSQL (the second needs
a snapshot of its own, taken after the first locked the account, to see every grant
change committed meanwhile), which psycopg sends as four round trips: ``BEGIN``, the
two statements, ``COMMIT``. On the default settle mode that sits between the provider's
answer and the client. ``credits_settle_v1`` runs the same two statements inside
PL/pgSQL, where a VOLATILE function's statements each take their own snapshot under
READ COMMITTED exactly as the client's would, and is called as one statement in
autocommit mode: one round trip, one transaction. ``credits_settle_escrowed_v1`` does
the same for ``escrow_sql.settle_escrowed`` (a call lent from an escrow).

Each function's body is the Python side's two statements with their parameters renamed
(``SettleFunction.create_sql``); migration 0003 keeps a frozen copy and a test holds the
two equal, so changing those statements means a new function version and a migration.

The rare case, no single grant covering the charge, raises ``NEEDS_BURN_LOOP``: the
whole call rolls back and the caller settles the usual way (grant by grant, the rest
debt). A database without the functions (created by an older version and not migrated)
is noticed on the first call and settled the usual way from then on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, TextClause, text
from sqlalchemy.exc import DBAPIError

from . import escrow_sql, hotpath
from .types import Settlement, UsageRecord

# the SQLSTATE a function raises when no single grant covers the charge (class "LC" is
# not PostgreSQL's, so it cannot be confused with a real error)
NEEDS_BURN_LOOP = "LC001"
UNDEFINED_FUNCTION = "42883"

# the usage event's fields, as ``hotpath.usage_params`` names them
_USAGE: tuple[tuple[str, str], ...] = (
    ("charge_reason", "text"),
    ("api_key_hash", "text"),
    ("user_id", "text"),
    ("team_id", "text"),
    ("end_user_id", "text"),
    ("model", "text"),
    ("provider", "text"),
    ("call_type", "text"),
    ("tokens_in", "bigint"),
    ("tokens_out", "bigint"),
    ("provider_cost_usd", "numeric"),
    ("markup_rule", "text"),
    ("catalog_version", "text"),
    ("cache_hit", "boolean"),
    ("stream", "boolean"),
    ("byok", "boolean"),
)
# what statement 2 returns in both settles: the usage event's id, the grant it burned
_STATEMENT_2_RESULT = (("event_id", "bigint"), ("grant_id", "bigint"))


class Unavailable(Exception):
    """The function is not in this database, or could not settle this charge alone."""


@dataclass(frozen=True)
class SettleFunction:
    """Two statements of a settle as one PL/pgSQL function.

    ``parameters`` are (name, type) in call order; ``statement_1`` returns the columns
    ``locals_1`` names, which statement 2 reads under those names and the function
    returns with statement 2's event and grant ids.
    """

    name: str
    parameters: tuple[tuple[str, str], ...]
    statement_1: str
    locals_1: tuple[tuple[str, str], ...]
    statement_2: str

    @property
    def _result(self) -> tuple[tuple[str, str], ...]:
        return self.locals_1 + _STATEMENT_2_RESULT

    def _plpgsql(self, sql: str, into: list[str]) -> str:
        """``sql`` with its ``:name`` parameters as PL/pgSQL names and INTO before its last FROM."""
        from_statement_1 = {name for name, _ in self.locals_1}

        def rename(match: re.Match[str]) -> str:
            name = match.group(1)
            return f"v_{name}" if name in from_statement_1 else f"p_{name}"

        renamed = re.sub(r"(?<![:\w]):(\w+)", rename, sql.strip())
        head, last = renamed.rsplit("\n", 1)
        select, source = last.rsplit(" FROM ", 1)
        return f"{head}\n{select}\n    INTO {', '.join(into)}\n    FROM {source};"

    def body(self) -> str:
        statement_1 = self._plpgsql(self.statement_1, [f"v_{name}" for name, _ in self.locals_1])
        statement_2 = self._plpgsql(self.statement_2, [f"v_{name}" for name, _ in _STATEMENT_2_RESULT])
        declared = "\n".join(f"    v_{name} {kind};" for name, kind in self._result)
        returned = ", ".join(f"v_{name}" for name, _ in self._result)
        return f"""DECLARE
{declared}
BEGIN
-- statement 1: the exactly-once check and the account
{statement_1}
IF NOT FOUND THEN
    RETURN;
END IF;
-- statement 2, a snapshot of its own: the grant, the entries, the usage event
{statement_2}
IF v_grant_id IS NULL AND p_micro > 0 THEN
    RAISE EXCEPTION USING ERRCODE = '{NEEDS_BURN_LOOP}',
        MESSAGE = 'no single grant covers the charge';
END IF;
RETURN QUERY SELECT {returned};
END;"""

    def create_sql(self) -> str:
        """The function's DDL (``CREATE OR REPLACE``: running it twice is harmless)."""
        arguments = ",\n".join(f"    p_{name} {kind}" for name, kind in self.parameters)
        result = ",\n".join(f"    o_{name} {kind}" for name, kind in self._result)
        return (
            f"CREATE OR REPLACE FUNCTION {self.name}(\n{arguments}\n)\n"
            f"RETURNS TABLE (\n{result}\n)\n"
            f"LANGUAGE plpgsql VOLATILE AS $function$\n{self.body()}\n$function$;\n"
        )

    @cached_property
    def call(self) -> TextClause:
        casts = ", ".join(f"CAST(:{name} AS {kind})" for name, kind in self.parameters)
        return text(f"SELECT * FROM {self.name}({casts})")

    def run(self, conn: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Call it (``conn`` in autocommit mode); its row, or None when statement 1 found
        nothing to charge. ``Unavailable`` when it is missing or no single grant covers
        the charge (nothing written)."""
        try:
            row = conn.execute(self.call, params).first()
        except DBAPIError as error:
            state = getattr(error.orig, "sqlstate", None)
            if state in (NEEDS_BURN_LOOP, UNDEFINED_FUNCTION):
                raise Unavailable(state) from error
            raise
        return None if row is None else tuple(row)


SETTLE = SettleFunction(
    name="credits_settle_v1",
    parameters=(("hold_id", "text"), ("micro", "bigint"), ("now", "timestamptz"), *_USAGE),
    statement_1=hotpath.PG_SETTLE_1_SQL,
    locals_1=(
        ("account_id", "bigint"),
        ("amount", "bigint"),
        ("reference", "text"),
        ("balance", "bigint"),
        ("held", "bigint"),
    ),
    statement_2=hotpath.PG_SETTLE_2_SQL,
)
SETTLE_ESCROWED = SettleFunction(
    name="credits_settle_escrowed_v1",
    parameters=(
        ("call_id", "text"),
        ("account_id", "bigint"),
        ("escrow_id", "text"),
        ("micro", "bigint"),
        ("now", "timestamptz"),
        ("reference", "text"),
        ("release_reason", "text"),
        *_USAGE,
    ),
    statement_1=escrow_sql.PG_ESCROWED_1_SQL,
    locals_1=(("balance", "bigint"), ("held", "bigint"), ("taken", "bigint"), ("escrow_reference", "text")),
    statement_2=escrow_sql.PG_ESCROWED_2_SQL,
)
FUNCTIONS = (SETTLE, SETTLE_ESCROWED)


def create_sql() -> str:
    """Every function's DDL, as ``schema.sql`` and migration 0003 hold it."""
    return "\n".join(function.create_sql() for function in FUNCTIONS)


def _usage(usage: UsageRecord) -> dict[str, Any]:
    params = hotpath.usage_params(usage)
    params["charge_reason"] = hotpath.charge_reason(usage)
    return params


def settle(
    conn: Connection, hold_id: str, micro: int, usage: UsageRecord, now: datetime
) -> Settlement | None:
    """``hotpath.settle`` in one statement; ``conn`` must be in autocommit mode.

    None when the hold is not open (nothing written); ``Unavailable`` as ``run``.
    """
    row = SETTLE.run(conn, {"hold_id": hold_id, "micro": micro, "now": now, **_usage(usage)})
    if row is None:
        return None
    account_id, amount, _reference, balance, held, event_id, _grant = row
    return hotpath.settled(hold_id, account_id, amount, micro, event_id, now, balance, held)


def settle_escrowed(
    conn: Connection,
    call_id: str,
    escrow_hold_id: str,
    account_id: int,
    micro: int,
    usage: UsageRecord,
    *,
    reference: str,
    now: datetime,
) -> Settlement | None:
    """``escrow_sql.settle_escrowed`` in one statement; ``conn`` in autocommit mode.

    None when ``call_id`` was charged before (nothing written); ``Unavailable`` as ``run``.
    """
    params = {
        "call_id": call_id,
        "account_id": account_id,
        "escrow_id": escrow_hold_id,
        "micro": micro,
        "now": now,
        "reference": reference,
        "release_reason": escrow_sql.release_reason(call_id),
        **_usage(usage),
    }
    row = SETTLE_ESCROWED.run(conn, params)
    if row is None:
        return None
    balance, held, _taken, _escrow_reference, event_id, _grant = row
    return escrow_sql.settlement(call_id, account_id, micro, now, event_id, balance, held)

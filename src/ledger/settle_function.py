"""PostgreSQL: a settle in ONE round trip, through a server-side function.

``hotpath.settle`` is two statements in one transaction on PostgreSQL (the second needs
a snapshot of its own, taken after the first locked the account, to see every grant
change committed meanwhile), which psycopg sends as four round trips: ``BEGIN``, the
two statements, ``COMMIT``. On the default settle mode that sits between the provider's
answer and the client. ``credits_settle_v1`` runs the same two statements inside
PL/pgSQL, where a VOLATILE function's statements each take their own snapshot under
READ COMMITTED exactly as the client's would, and is called as one statement in
autocommit mode: one round trip, one transaction.

The function's body is hotpath's two statements with their parameters renamed
(``body()``); migration 0003 keeps a frozen copy and a test holds the two equal, so
changing those statements means a new function version and a migration.

The rare case, no single grant covering the charge, raises ``NEEDS_BURN_LOOP``: the
whole call rolls back and the caller settles the usual way (grant by grant, the rest
debt). A database without the function (created by an older version and not migrated)
is noticed on the first call and settled the usual way from then on.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from . import hotpath
from .types import Settlement, UsageRecord

NAME = "credits_settle_v1"
# the SQLSTATE the function raises when no single grant covers the charge (class "LC" is
# not PostgreSQL's, so it cannot be confused with a real error)
NEEDS_BURN_LOOP = "LC001"
_UNDEFINED_FUNCTION = "42883"

# (parameter, type) in call order; the usage fields follow hotpath.usage_params
_PARAMETERS: tuple[tuple[str, str], ...] = (
    ("hold_id", "text"),
    ("micro", "bigint"),
    ("now", "timestamptz"),
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
# statement 2's parameters that statement 1 returns
_FROM_STATEMENT_1 = ("account_id", "amount", "reference")
_RESULT = ("account_id", "amount", "reference", "balance", "held", "event_id", "grant_id")
_RESULT_TYPES = ("bigint", "bigint", "text", "bigint", "bigint", "bigint", "bigint")

CALL = text(
    f"SELECT * FROM {NAME}(" + ", ".join(f"CAST(:{name} AS {kind})" for name, kind in _PARAMETERS) + ")"
)


def _plpgsql(sql: str, into: tuple[str, ...]) -> str:
    """``sql`` with its ``:name`` parameters as PL/pgSQL names and INTO before its last FROM."""

    def rename(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"v_{name}" if name in _FROM_STATEMENT_1 else f"p_{name}"

    renamed = re.sub(r"(?<![:\w]):(\w+)", rename, sql.strip())
    head, last = renamed.rsplit("\n", 1)
    select, source = last.rsplit(" FROM ", 1)
    return f"{head}\n{select}\n    INTO {', '.join(into)}\n    FROM {source};"


def body() -> str:
    statement_1 = _plpgsql(hotpath.PG_SETTLE_1_SQL, tuple(f"v_{name}" for name in _RESULT[:5]))
    statement_2 = _plpgsql(hotpath.PG_SETTLE_2_SQL, ("v_event_id", "v_grant_id"))
    declared = "\n".join(f"    v_{name} {kind};" for name, kind in zip(_RESULT, _RESULT_TYPES, strict=True))
    returned = ", ".join(f"v_{name}" for name in _RESULT)
    return f"""DECLARE
{declared}
BEGIN
-- statement 1: close the hold if it is open (the exactly-once check), move the account
{statement_1}
IF NOT FOUND THEN
    RETURN;
END IF;
-- statement 2, a snapshot of its own: the grant, the entries, the usage event
{statement_2}
IF v_grant_id IS NULL AND p_micro > 0 THEN
    RAISE EXCEPTION USING ERRCODE = '{NEEDS_BURN_LOOP}',
        MESSAGE = 'no single grant covers the charge of ' || p_hold_id;
END IF;
RETURN QUERY SELECT {returned};
END;"""


def create_sql() -> str:
    """The DDL of the function (``CREATE OR REPLACE``: running it twice is harmless)."""
    arguments = ",\n".join(f"    p_{name} {kind}" for name, kind in _PARAMETERS)
    result = ",\n".join(f"    o_{name} {kind}" for name, kind in zip(_RESULT, _RESULT_TYPES, strict=True))
    return (
        f"CREATE OR REPLACE FUNCTION {NAME}(\n{arguments}\n)\n"
        f"RETURNS TABLE (\n{result}\n)\n"
        f"LANGUAGE plpgsql VOLATILE AS $function$\n{body()}\n$function$;\n"
    )


class Unavailable(Exception):
    """The function is not in this database, or could not settle this charge alone."""


def settle(
    conn: Connection, hold_id: str, micro: int, usage: UsageRecord, now: datetime
) -> Settlement | None:
    """``hotpath.settle`` in one statement; ``conn`` must be in autocommit mode.

    None when the hold is not open (nothing written). Raises ``Unavailable`` (nothing
    written) when the function is missing or no single grant covers the charge.
    """
    params = hotpath.usage_params(usage)
    params.update(hold_id=hold_id, micro=micro, now=now, charge_reason=hotpath.charge_reason(usage))
    try:
        row = conn.execute(CALL, params).first()
    except DBAPIError as error:
        state = getattr(error.orig, "sqlstate", None)
        if state in (NEEDS_BURN_LOOP, _UNDEFINED_FUNCTION):
            raise Unavailable(state) from error
        raise
    if row is None:
        return None
    account_id, amount, _reference, balance, held, event_id, _grant_id = row
    return hotpath.settled(hold_id, account_id, amount, micro, event_id, now, balance, held)

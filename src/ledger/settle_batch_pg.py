"""PostgreSQL's statements for a journal batch (``settle_batch``): a few set-based ones.

Updates join arrays of their rows; inserts take their rows as one JSON document.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, TextClause, text

# Updates join their rows from arrays (``unnest``): the planner sizes an array right and
# takes the index; it guesses 100 rows for ``json_to_recordset`` and hash-joins a
# sequential scan of the whole table.
_CLOSE_HOLDS = text(
    """
UPDATE holds SET status = 'settled', charged = v.micro, resolved_at = :now
FROM unnest(CAST(:ids AS text[]), CAST(:micros AS bigint[])) AS v(id, micro)
WHERE holds.id = v.id AND holds.status = 'open'
RETURNING holds.id, holds.account_id, holds.amount, holds.reference
"""
)
_MOVE_ACCOUNTS = text(
    """
UPDATE accounts SET held = accounts.held - v.amount, balance = accounts.balance - v.micro,
    updated_at = :now
FROM unnest(CAST(:ids AS bigint[]), CAST(:amounts AS bigint[]), CAST(:micros AS bigint[]))
    AS v(id, amount, micro)
WHERE accounts.id = v.id
"""
)
# Inserts take their rows as ONE json parameter (``json_to_recordset``): an array per
# column made psycopg dump every element in Python, which held the interpreter lock for
# about 35 us per charge, more than the calls it served; one JSON text is encoded natively.
_ENTRY_COLUMNS = {
    "account_id": "bigint",
    "kind": "text",
    "amount": "bigint",
    "held_delta": "bigint",
    "grant_id": "bigint",
    "hold_id": "text",
    "reason": "text",
    "reference": "text",
}
_EVENT_COLUMNS = {
    "hold_id": "text",
    "account_id": "bigint",
    "api_key_hash": "text",
    "user_id": "text",
    "team_id": "text",
    "end_user_id": "text",
    "model": "text",
    "provider": "text",
    "call_type": "text",
    "tokens_in": "bigint",
    "tokens_out": "bigint",
    "provider_cost_usd": "numeric",
    "markup_rule": "text",
    "catalog_version": "text",
    "charged": "bigint",
    "cache_hit": "boolean",
    "stream": "boolean",
    "byok": "boolean",
}


def _insert_rows(table: str, columns: dict[str, str]) -> TextClause:
    names = ", ".join(columns)
    record = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    return text(
        f"INSERT INTO {table} ({names}, created_at) "
        f"SELECT {names}, :now FROM json_to_recordset(CAST(:rows AS json)) AS v({record})"
    )


_INSERT_ENTRIES = _insert_rows("entries", _ENTRY_COLUMNS)
_INSERT_EVENTS = _insert_rows("usage_events", _EVENT_COLUMNS)


def _rows(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON document; keys not in a statement's record are ignored by it.

    Each row's ``created_at`` is dropped here (the statement writes ``:now``): a
    datetime would cost a call back into Python per row, as a Decimal would (callers
    pass decimals as their exact text, which ``numeric`` parses as is).
    """
    for row in rows:
        row.pop("created_at", None)
    try:
        # orjson: a tenth of json.dumps's time per row, on the writer's every charge
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        # what orjson refuses (an integer beyond 64 bits) goes as the standard library writes it
        return json.dumps(rows, separators=(",", ":"))


_LOCK_ESCROWS = text(
    """
SELECT id, account_id, amount, reference FROM holds
WHERE id = ANY(CAST(:ids AS text[])) AND status = 'open'
ORDER BY id FOR NO KEY UPDATE
"""
)
# It answers with the calls charged before (none, nearly always), not the new ones: a
# row read back costs the writer some 8 us of Python each (SQLAlchemy fetches one row
# at a time), a quarter of its time per charge when every call was new.
_INSERT_CALL_HOLDS = text(
    """
WITH v AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(id text, account_id bigint, micro bigint)
), fresh AS (
    INSERT INTO holds (id, account_id, amount, status, expires_at, reference, charged, created_at, resolved_at)
    SELECT v.id, v.account_id, 0, 'settled', :now, '', v.micro, :now, :now FROM v
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT v.id FROM v WHERE NOT EXISTS (SELECT 1 FROM fresh WHERE fresh.id = v.id)
"""
)
_SHRINK_ESCROWS = text(
    """
UPDATE holds SET amount = v.amount
FROM unnest(CAST(:ids AS text[]), CAST(:amounts AS bigint[])) AS v(id, amount)
WHERE holds.id = v.id
"""
)


def lock_escrows(conn: Connection, ids: list[str]) -> list[tuple[str, int, int, str]]:
    """The open escrows among ``ids``, locked in id order."""
    return [(i, a, m, r) for i, a, m, r in conn.execute(_LOCK_ESCROWS, {"ids": ids})]


def close_holds(conn: Connection, micros: dict[str, int], now: datetime) -> list[tuple[str, int, int, str]]:
    """Settle the open holds among ``micros`` (hold id -> charge): the exactly-once check.

    Returns (id, account_id, amount, reference) of each hold closed now.
    """
    rows = conn.execute(_CLOSE_HOLDS, {"ids": list(micros), "micros": list(micros.values()), "now": now})
    return [(i, a, m, r) for i, a, m, r in rows]


def insert_call_holds(conn: Connection, calls: list[tuple[str, int, int]], now: datetime) -> set[str]:
    """Hold rows born settled for (call id, account id, charge); the ids new here."""
    rows = [{"id": i, "account_id": a, "micro": m} for i, a, m in calls]
    known = {row[0] for row in conn.execute(_INSERT_CALL_HOLDS, {"rows": _rows(rows), "now": now})}
    return {i for i, _, _ in calls if i not in known}


def shrink_escrows(conn: Connection, amounts: list[tuple[str, int]]) -> None:
    """Set each escrow's (id, amount left)."""
    conn.execute(_SHRINK_ESCROWS, {"ids": [i for i, _ in amounts], "amounts": [a for _, a in amounts]})


def move_accounts(conn: Connection, moves: list[tuple[int, int, int]], now: datetime) -> None:
    """Per (account id, released from held, charged): held and balance go down."""
    conn.execute(
        _MOVE_ACCOUNTS,
        {
            "ids": [i for i, _, _ in moves],
            "amounts": [r for _, r, _ in moves],
            "micros": [c for _, _, c in moves],
            "now": now,
        },
    )


def insert_entries(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
    conn.execute(_INSERT_ENTRIES, {"rows": _rows(rows), "now": now})


def insert_events(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
    for row in rows:
        row["provider_cost_usd"] = str(row["provider_cost_usd"])  # its exact text: see _rows
    conn.execute(_INSERT_EVENTS, {"rows": _rows(rows), "now": now})

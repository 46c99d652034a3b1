"""SQLite's statements for a journal batch (``settle_batch``): one ``executemany`` each.

A statement through SQLAlchemy costs tens of microseconds of Python before SQLite
runs it; charging a batch one call at a time (eight statements a call) cost the
writer about 1 ms of the proxy's CPU per call. Here each step is one statement, run
for all its rows by the driver's ``executemany`` in C.

The inserts (four rows a charge) go to the driver as tuples: SQLAlchemy's own
``executemany`` builds and converts every row's parameters in Python, which was two
thirds of the writer's 60 us per charge, on the proxy's CPU (SQLite runs in-process).
Each value still goes through its column's bind processor, the one SQLAlchemy would
have used, so what is stored is the same; a batch's one timestamp is converted once.

The batch runs in the ledger's ``BEGIN IMMEDIATE`` transaction: it holds the write
lock from its first statement, so what a ``SELECT`` finds open or absent stays so
until the commit, and the ``UPDATE`` or ``INSERT`` after it needs no condition of
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import BindParameter, Connection, String, Table, bindparam, select, update

from .hotpath import ACCOUNTS, ENTRIES, HOLDS, USAGE_EVENTS, _p_account, _p_amount, _p_hold, _p_micro, _p_now
from .tables import UTCDateTime

_h = HOLDS.c
_a = ACCOUNTS.c
_ids: BindParameter[str] = bindparam("ids", type_=String(), expanding=True)

_OPEN_HOLDS = select(_h.id, _h.account_id, _h.amount, _h.reference).where(
    _h.id.in_(_ids), _h.status == "open"
)
_KNOWN_HOLDS = select(_h.id).where(_h.id.in_(_ids))
_CLOSE_HOLD = (
    update(HOLDS).where(_h.id == _p_hold).values(status="settled", charged=_p_micro, resolved_at=_p_now)
)
_SET_AMOUNT = update(HOLDS).where(_h.id == _p_hold).values(amount=_p_amount)
_MOVE_ACCOUNT = (
    update(ACCOUNTS)
    .where(_a.id == _p_account)
    .values(held=_a.held - _p_amount, balance=_a.balance - _p_micro, updated_at=_p_now)
)


def _open(conn: Connection, ids: list[str]) -> list[tuple[str, int, int, str]]:
    rows = conn.execute(_OPEN_HOLDS.order_by(_h.id), {"ids": ids})
    return [(i, int(a), int(m), r) for i, a, m, r in rows]


def lock_escrows(conn: Connection, ids: list[str]) -> list[tuple[str, int, int, str]]:
    """The open escrows among ``ids`` (the transaction's write lock covers them)."""
    return _open(conn, ids)


def close_holds(conn: Connection, micros: dict[str, int], now: datetime) -> list[tuple[str, int, int, str]]:
    """Settle the open holds among ``micros`` (hold id -> charge): the exactly-once check.

    Returns (id, account_id, amount, reference) of each hold closed now.
    """
    closed = _open(conn, list(micros))
    if closed:
        conn.execute(
            _CLOSE_HOLD, [{"p_hold": i, "p_micro": micros[i], "p_now": now} for i, _, _, _ in closed]
        )
    return closed


def insert_call_holds(conn: Connection, calls: list[tuple[str, int, int]], now: datetime) -> set[str]:
    """Hold rows born settled for (call id, account id, charge); the ids new here."""
    known = set(conn.execute(_KNOWN_HOLDS, {"ids": [i for i, _, _ in calls]}).scalars())
    fresh = [(i, a, m) for i, a, m in calls if i not in known]
    if fresh:
        _insert(
            conn,
            HOLDS,
            [
                {
                    "id": i,
                    "account_id": a,
                    "amount": 0,
                    "status": "settled",
                    "expires_at": now,
                    "reference": "",
                    "charged": m,
                    "created_at": now,
                    "resolved_at": now,
                }
                for i, a, m in fresh
            ],
        )
    return {i for i, _, _ in fresh}


def shrink_escrows(conn: Connection, amounts: list[tuple[str, int]]) -> None:
    """Set each escrow's (id, amount left)."""
    conn.execute(_SET_AMOUNT, [{"p_hold": i, "p_amount": a} for i, a in amounts])


def move_accounts(conn: Connection, moves: list[tuple[int, int, int]], now: datetime) -> None:
    """Per (account id, released from held, charged): held and balance go down."""
    conn.execute(
        _MOVE_ACCOUNT, [{"p_account": i, "p_amount": r, "p_micro": c, "p_now": now} for i, r, c in moves]
    )


def insert_entries(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
    _insert(conn, ENTRIES, rows)


def insert_events(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
    _insert(conn, USAGE_EVENTS, rows)


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` ``rows`` (dicts with the same keys) in one ``executemany`` of tuples."""
    if not rows:
        return
    names = list(rows[0])
    # itemgetter of one name returns the value itself, not a 1-tuple
    values = itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
    converted = [(i, c) for i, c in enumerate(_converter(conn, table, name) for name in names) if c]
    params: list[tuple[Any, ...]] = []
    for row in rows:
        one = list(values(row))
        for i, convert in converted:
            one[i] = convert(one[i])
        params.append(tuple(one))
    placeholders = ", ".join("?" * len(names))
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({placeholders})", params)


def _converter(conn: Connection, table: Table, name: str) -> Callable[[Any], Any] | None:
    """The column's bind processor for this dialect; a timestamp's result remembered (a
    batch has one ``now``: converting it per row was a third of the Python)."""
    process = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    if process is None or not isinstance(table.c[name].type, UTCDateTime):
        return process
    seen: dict[datetime, Any] = {}

    def remembered(value: Any) -> Any:
        if value is None:
            return None
        hit = seen.get(value)
        if hit is None:
            hit = seen[value] = process(value)
        return hit

    return remembered

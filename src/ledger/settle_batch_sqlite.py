"""SQLite's statements for a journal batch (``settle_batch``): one ``executemany`` each.

A statement through SQLAlchemy costs tens of microseconds of Python before SQLite
runs it; charging a batch one call at a time (eight statements a call) cost the
writer about 1 ms of the proxy's CPU per call. Here each step is one statement, run
for all its rows by the driver's ``executemany`` in C.

The batch runs in the ledger's ``BEGIN IMMEDIATE`` transaction: it holds the write
lock from its first statement, so what a ``SELECT`` finds open or absent stays so
until the commit, and the ``UPDATE`` or ``INSERT`` after it needs no condition of
its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, String, bindparam, insert, select, update

from .hotpath import ACCOUNTS, ENTRIES, HOLDS, USAGE_EVENTS, _p_account, _p_amount, _p_hold, _p_micro, _p_now

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
_INSERT_HOLD = insert(HOLDS)
_INSERT_ENTRY = insert(ENTRIES)
_INSERT_EVENT = insert(USAGE_EVENTS)


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
        conn.execute(
            _INSERT_HOLD,
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
    conn.execute(_INSERT_ENTRY, rows)


def insert_events(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
    conn.execute(_INSERT_EVENT, rows)

"""Many charges as a few set-based statements (the settle journal's writer).

``hotpath.settle`` and ``escrow_sql.settle_escrowed`` cost two statements per charge on
PostgreSQL, and a hot account's row is locked from the first of them to the commit. A
journal batch of N charges here costs at most eight statements whatever N is, and
touches each account row once:

1. lock the open escrows the lent calls borrowed from (``FOR NO KEY UPDATE``, id order);
2. close every open hold of the held calls (``UPDATE holds ... FROM unnest(...)``): the
   exactly-once check, as in ``hotpath.settle``; a hold that is not open matches no
   row and its charge goes back to the caller for the one-by-one paths;
3. insert the lent calls' own hold rows, born settled (``ON CONFLICT DO NOTHING``: a
   call charged before is skipped), and take each call's charge out of its escrow
   in the batch's order, as ``settle_escrowed`` would one after another;
4. the escrows' new amounts, then one ``UPDATE accounts`` with each account's summed
   release and charge;
5. per account, burn its summed charge from the first live grant when that grant
   covers all of it (the common case); otherwise that account's charges burn one by
   one (``hotpath.burn_loop``), the rest becoming debt, exactly as alone;
6. every release and charge entry in one multi-row ``INSERT``, every usage event in
   another.

Updates join arrays of their rows; inserts take their rows as one JSON document.

Locks are taken in the usual order (holds, then accounts, then grants). The result is
the same books as charging the calls one after another in the batch's order.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, TextClause, text

from . import escrow_sql, hotpath
from .types import UsageRecord

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
# about 35 us per charge, more than the calls it served; ``json.dumps`` is C.
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
    return json.dumps(rows, separators=(",", ":"))


_LOCK_ESCROWS = text(
    """
SELECT id, account_id, amount, reference FROM holds
WHERE id = ANY(CAST(:ids AS text[])) AND status = 'open'
ORDER BY id FOR NO KEY UPDATE
"""
)
_INSERT_CALL_HOLDS = text(
    """
INSERT INTO holds (id, account_id, amount, status, expires_at, reference, charged, created_at, resolved_at)
SELECT v.id, v.account_id, 0, 'settled', :now, '', v.micro, :now, :now
FROM json_to_recordset(CAST(:rows AS json)) AS v(id text, account_id bigint, micro bigint)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
)
_SHRINK_ESCROWS = text(
    """
UPDATE holds SET amount = v.amount
FROM unnest(CAST(:ids AS text[]), CAST(:amounts AS bigint[])) AS v(id, amount)
WHERE holds.id = v.id
"""
)


@dataclass(frozen=True, slots=True)
class OpenCharge:
    """A charge of a call with a hold of its own."""

    hold_id: str
    micro: int
    usage: UsageRecord


@dataclass(frozen=True, slots=True)
class LentCharge:
    """A charge of a call lent from an escrow (``hold_id`` is the call's id)."""

    hold_id: str
    escrow_hold_id: str
    account_id: int
    micro: int
    usage: UsageRecord


@dataclass(slots=True)
class _Escrow:
    account_id: int
    amount: int
    reference: str
    changed: bool = False


def settle(
    conn: Connection, held: Sequence[OpenCharge], lent: Sequence[LentCharge], now: datetime
) -> set[str]:
    """Charge ``held`` calls whose hold is open and ``lent`` calls not charged yet.

    Returns the hold ids charged now; the others (a hold not open, a call id charged
    before) are untouched. A hold id that appears twice is charged by its first charge.
    """
    if conn.dialect.name != "postgresql":
        return _one_by_one(conn, held, lent, now)
    first_held = _first(held)
    first_lent = _first(lent)
    escrows = _lock_escrows(conn, sorted({c.escrow_hold_id for c in first_lent.values()}))
    closed = (
        conn.execute(
            _CLOSE_HOLDS,
            {"ids": list(first_held), "micros": [c.micro for c in first_held.values()], "now": now},
        ).all()
        if first_held
        else []
    )
    fresh = _insert_call_holds(conn, list(first_lent.values()), now)
    per_account: dict[int, _Account] = defaultdict(_Account)
    # in the batch's order, not the statement's: the order decides which grant each
    # charge burns when an account's charges cross from one grant to the next
    closed_rows = {row[0]: row for row in closed}
    for hold_id, account_id, amount, reference in (closed_rows[i] for i in first_held if i in closed_rows):
        charge = first_held[hold_id]
        one = hotpath._Charge(
            hold_id, account_id, charge.micro, reference, hotpath.charge_reason(charge.usage), now
        )
        per_account[account_id].add(
            one,
            charge.usage,
            amount,
            hotpath.release_entry(account_id, hold_id, amount, "settled", reference, now),
        )
    for call in (first_lent[hold_id] for hold_id in first_lent if hold_id in fresh):
        one = hotpath._Charge(
            call.hold_id, call.account_id, call.micro, "", hotpath.charge_reason(call.usage), now
        )
        escrow = escrows.get(call.escrow_hold_id)
        taken = 0
        if escrow is not None and escrow.account_id == call.account_id:
            taken = min(escrow.amount, call.micro)
            escrow.amount -= taken
            escrow.changed = escrow.changed or taken > 0
        release = (
            escrow_sql.lent_release_entry(one, call.escrow_hold_id, taken, escrow.reference)
            if escrow is not None and taken > 0
            else None
        )
        per_account[call.account_id].add(one, call.usage, taken, release)
    if not per_account:
        return set()
    changed = [(i, e.amount) for i, e in escrows.items() if e.changed]
    if changed:
        conn.execute(_SHRINK_ESCROWS, {"ids": [i for i, _ in changed], "amounts": [a for _, a in changed]})
    accounts = sorted(per_account)
    conn.execute(
        _MOVE_ACCOUNTS,
        {
            "ids": accounts,
            "amounts": [per_account[a].released for a in accounts],
            "micros": [per_account[a].charged for a in accounts],
            "now": now,
        },
    )
    entries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for account_id in accounts:
        book = per_account[account_id]
        grant_id = _burn_all_from_first(conn, account_id, book.charged, now)
        for one, usage, release in book.charges:
            if release is not None:
                entries.append(release)
            if grant_id is not None:
                if one.micro > 0:
                    entries.append(hotpath._charge_entry(one, grant_id, one.micro, one.reason))
            elif one.micro > 0:
                entries.extend(hotpath.burn_loop(conn, one))
            params = hotpath.usage_params(usage)
            params.update(
                hold_id=one.hold_id,
                account_id=account_id,
                charged=one.micro,
                provider_cost_usd=str(usage.provider_cost_usd),
            )
            events.append(params)
    if entries:
        conn.execute(_INSERT_ENTRIES, {"rows": _rows(entries), "now": now})
    conn.execute(_INSERT_EVENTS, {"rows": _rows(events), "now": now})
    return set(closed_rows) | fresh


@dataclass(slots=True)
class _Account:
    """One account's part of a batch: what it is charged and what leaves its held."""

    charged: int = 0
    released: int = 0
    charges: list[tuple[hotpath._Charge, UsageRecord, dict[str, Any] | None]] = field(default_factory=list)

    def add(
        self, one: hotpath._Charge, usage: UsageRecord, released: int, release: dict[str, Any] | None
    ) -> None:
        self.charged += one.micro
        self.released += released
        self.charges.append((one, usage, release))


_C = TypeVar("_C", OpenCharge, LentCharge)


def _first(charges: Sequence[_C]) -> dict[str, _C]:
    first: dict[str, _C] = {}
    for charge in charges:
        first.setdefault(charge.hold_id, charge)
    return first


def _lock_escrows(conn: Connection, ids: list[str]) -> dict[str, _Escrow]:
    """Lock the open escrows of the batch, first of all (hold rows before accounts)."""
    if not ids:
        return {}
    rows = conn.execute(_LOCK_ESCROWS, {"ids": ids}).all()
    return {
        hold_id: _Escrow(account_id, amount, reference) for hold_id, account_id, amount, reference in rows
    }


def _insert_call_holds(conn: Connection, calls: list[LentCharge], now: datetime) -> set[str]:
    """The lent calls' own hold rows, born settled; returns the ids not charged before."""
    if not calls:
        return set()
    rows = conn.execute(
        _INSERT_CALL_HOLDS,
        {
            "rows": _rows([{"id": c.hold_id, "account_id": c.account_id, "micro": c.micro} for c in calls]),
            "now": now,
        },
    ).all()
    return {row[0] for row in rows}


def _one_by_one(
    conn: Connection, held: Sequence[OpenCharge], lent: Sequence[LentCharge], now: datetime
) -> set[str]:
    """SQLite: a statement is a function call, the loop is as cheap as the set."""
    done: set[str] = set()
    for charge in held:
        if charge.hold_id not in done and hotpath.settle(
            conn, charge.hold_id, charge.micro, charge.usage, now
        ):
            done.add(charge.hold_id)
    for call in lent:
        if call.hold_id not in done and escrow_sql.settle_escrowed(
            conn,
            call.hold_id,
            call.escrow_hold_id,
            call.account_id,
            call.micro,
            call.usage,
            reference="",
            now=now,
        ):
            done.add(call.hold_id)
    return done


def _burn_all_from_first(conn: Connection, account_id: int, total: int, now: datetime) -> int | None:
    """Take ``total`` from the account's first live grant if it covers it; its id, or None."""
    if total <= 0:
        return None
    row = conn.execute(hotpath.BURN_FIRST, {"p_account": account_id, "p_micro": total, "p_now": now}).first()
    return int(row[0]) if row is not None else None

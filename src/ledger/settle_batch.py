"""Many settles of open holds as a few set-based statements (the settle journal's writer).

``hotpath.settle`` costs two statements per charge on PostgreSQL, and a hot account's
row is locked from the first of them to the commit. A journal batch of N charges here
costs five statements whatever N is, and touches each account row once:

1. close every open hold of the batch (``UPDATE holds ... FROM unnest(...)``): the
   exactly-once check, as in ``hotpath.settle``; a hold that is not open matches no
   row and its charge goes back to the caller for the one-by-one paths;
2. one ``UPDATE accounts`` with each account's summed release and charge;
3. per account, burn its summed charge from the first live grant when that grant
   covers all of it (the common case); otherwise that account's charges burn one by
   one (``hotpath.burn_loop``), the rest becoming debt, exactly as alone;
4. every release and charge entry in one multi-row ``INSERT``;
5. every usage event in one multi-row ``INSERT``.

Locks are taken in the usual order (holds, then accounts, then grants). The result is
the same books as settling the charges one after another in the batch's order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, text

from . import hotpath
from .types import UsageRecord

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
_INSERT_USAGE = insert(hotpath.USAGE_EVENTS)
_LOCK_HOLDS = text("SELECT id FROM holds WHERE id = ANY(CAST(:ids AS text[])) ORDER BY id FOR UPDATE")


def lock_holds(conn: Connection, hold_ids: Sequence[str]) -> None:
    """Lock these hold rows (in id order) before the batch locks any account (PostgreSQL).

    SQLite's ``BEGIN IMMEDIATE`` already holds the one write lock there is.
    """
    if hold_ids and conn.dialect.name == "postgresql":
        conn.execute(_LOCK_HOLDS, {"ids": list(hold_ids)})


@dataclass(frozen=True, slots=True)
class OpenCharge:
    hold_id: str
    micro: int
    usage: UsageRecord


def settle_open(conn: Connection, charges: Sequence[OpenCharge], now: datetime) -> set[str]:
    """Settle each charge whose hold is open; returns their hold ids (the rest: untouched).

    A hold id that appears twice is settled by its first charge only.
    """
    if conn.dialect.name != "postgresql":
        # SQLite: a statement is a function call, the loop is as cheap as the set.
        done: set[str] = set()
        for charge in charges:
            if charge.hold_id in done:
                continue
            if hotpath.settle(conn, charge.hold_id, charge.micro, charge.usage, now) is not None:
                done.add(charge.hold_id)
        return done
    first: dict[str, OpenCharge] = {}
    for charge in charges:
        first.setdefault(charge.hold_id, charge)
    if not first:
        return set()
    closed = conn.execute(
        _CLOSE_HOLDS,
        {"ids": list(first), "micros": [c.micro for c in first.values()], "now": now},
    ).all()
    if not closed:
        return set()
    per_account: dict[int, list[tuple[OpenCharge, int, str]]] = defaultdict(list)
    for hold_id, account_id, amount, reference in closed:
        per_account[account_id].append((first[hold_id], amount, reference))
    accounts = sorted(per_account)
    conn.execute(
        _MOVE_ACCOUNTS,
        {
            "ids": accounts,
            "amounts": [sum(amount for _, amount, _ in per_account[a]) for a in accounts],
            "micros": [sum(c.micro for c, _, _ in per_account[a]) for a in accounts],
            "now": now,
        },
    )
    entries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for account_id in accounts:
        settled = per_account[account_id]
        total = sum(c.micro for c, _, _ in settled)
        grant_id = _burn_all_from_first(conn, account_id, total, now)
        for charge, amount, reference in settled:
            one = hotpath._Charge(
                charge.hold_id, account_id, charge.micro, reference, hotpath.charge_reason(charge.usage), now
            )
            entries.append(_release(one, amount))
            if grant_id is not None:
                if charge.micro > 0:
                    entries.append(hotpath._charge_entry(one, grant_id, charge.micro, one.reason))
            elif charge.micro > 0:
                entries.extend(hotpath.burn_loop(conn, one))
            params = hotpath.usage_params(charge.usage)
            params.update(hold_id=charge.hold_id, account_id=account_id, charged=charge.micro, created_at=now)
            events.append(params)
    conn.execute(hotpath.INSERT_ENTRY, entries)
    conn.execute(_INSERT_USAGE, events)
    return {hold_id for hold_id, _, _, _ in closed}


def _burn_all_from_first(conn: Connection, account_id: int, total: int, now: datetime) -> int | None:
    """Take ``total`` from the account's first live grant if it covers it; its id, or None."""
    if total <= 0:
        return None
    row = conn.execute(hotpath.BURN_FIRST, {"p_account": account_id, "p_micro": total, "p_now": now}).first()
    return int(row[0]) if row is not None else None


def _release(charge: hotpath._Charge, amount: int) -> dict[str, Any]:
    return {
        "account_id": charge.account_id,
        "kind": "release",
        "amount": 0,
        "held_delta": -amount,
        "grant_id": None,
        "hold_id": charge.hold_id,
        "reason": "settled",
        "reference": charge.reference,
        "created_at": charge.now,
    }

"""Many charges as a few set-based statements (the settle journal's writer).

``hotpath.settle`` and ``escrow_sql.settle_escrowed`` cost two statements per charge on
PostgreSQL (eight on SQLite), and a hot account's row is locked from the first of them
to the commit. A journal batch of N charges here costs a fixed number of statements
whatever N is (eight on PostgreSQL, ten on SQLite, plus a grant burn per account), and
touches each account row once:

1. lock the open escrows the lent calls borrowed from (id order);
2. close every open hold of the held calls: the exactly-once check, as in
   ``hotpath.settle``; a hold that is not open is left alone and its charge goes back
   to the caller for the one-by-one paths;
3. insert the lent calls' own hold rows, born settled (a call charged before is
   skipped), and take each call's charge out of its escrow in the batch's order, as
   ``settle_escrowed`` would one after another;
4. the escrows' new amounts, then one ``UPDATE accounts`` with each account's summed
   release and charge;
5. per account, burn its summed charge from the first live grant when that grant
   covers all of it (the common case); otherwise that account's charges burn one by
   one (``hotpath.burn_loop``), the rest becoming debt, exactly as alone;
6. every release and charge entry in one multi-row ``INSERT``, every usage event in
   another.

The statements are each database's own (``settle_batch_pg``, ``settle_batch_sqlite``);
this module is the arithmetic they share. Locks are taken in the usual order (holds,
then accounts, then grants). The result is the same books as charging the calls one
after another in the batch's order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any, TypeVar

from sqlalchemy import Connection

from . import escrow_sql, hotpath, settle_batch_pg, settle_batch_sqlite
from .types import UsageRecord

_STATEMENTS: dict[str, ModuleType] = {"postgresql": settle_batch_pg, "sqlite": settle_batch_sqlite}


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
    sql = _STATEMENTS[conn.dialect.name]
    first_held = _first(held)
    first_lent = _first(lent)
    escrow_ids = sorted({c.escrow_hold_id for c in first_lent.values()})
    escrows = {
        hold_id: _Escrow(account_id, amount, reference)
        for hold_id, account_id, amount, reference in (
            sql.lock_escrows(conn, escrow_ids) if escrow_ids else []
        )
    }
    closed = sql.close_holds(conn, {i: c.micro for i, c in first_held.items()}, now) if first_held else []
    calls = [(c.hold_id, c.account_id, c.micro) for c in first_lent.values()]
    fresh: set[str] = sql.insert_call_holds(conn, calls, now) if calls else set()
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
        sql.shrink_escrows(conn, changed)
    accounts = sorted(per_account)
    sql.move_accounts(conn, [(a, per_account[a].released, per_account[a].charged) for a in accounts], now)
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
            params.update(hold_id=one.hold_id, account_id=account_id, charged=one.micro, created_at=now)
            events.append(params)
    if entries:
        sql.insert_entries(conn, entries, now)
    sql.insert_events(conn, events, now)
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


def _burn_all_from_first(conn: Connection, account_id: int, total: int, now: datetime) -> int | None:
    """Take ``total`` from the account's first live grant if it covers it; its id, or None."""
    if total <= 0:
        return None
    row = conn.execute(hotpath.BURN_FIRST, {"p_account": account_id, "p_micro": total, "p_now": now}).first()
    return int(row[0]) if row is not None else None

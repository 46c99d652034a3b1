"""Charges of calls lent from an escrow hold (``ledger.escrow``), and shrinking an escrow.

An escrow is an ordinary open hold (reference ``"escrow"``) whose credit Redis lends
to many calls. The ledger's books stay the usual ones: each call gets its own hold row,
born settled like ``hotpath.settle_unheld`` (its primary key makes a repeat a no-op),
and the part of the escrow the call used moves out of ``held`` with a ``release``
entry on the escrow hold. So per hold, the entries still leave ``amount`` held while
it is open and 0 after: the audit needs nothing new.

An escrow that is no longer open (expired or voided by the sweeper) gives nothing: the
call is then charged like a late charge, to the balance only.

Locks: the call's hold row is new (no one else can hold it), then the escrow hold,
then the account, then grants, the order every other operation uses (a settle journal
batch locks all its escrow holds first, then accounts). A shrink that loses a deadlock
anyway is safe to run again: ``lock_conflict`` tells the caller so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, exc, select, text, update

from .hotpath import (
    ACCOUNTS,
    HOLDS,
    INSERT_ENTRY,
    INSERT_UNHELD,
    _Charge,
    _p_account,
    _p_hold,
    _p_micro,
    _p_now,
    _p_take,
    burn,
    burn_loop,
    charge_reason,
    charge_sql,
    insert_usage,
    release_entry,
    usage_params,
)
from .types import Settlement, UsageRecord

# the reference of an escrow's hold row: what tells it from a call's own hold
ESCROW_REFERENCE: Final = "escrow"

_a = ACCOUNTS.c
_h = HOLDS.c

# SQLSTATEs of a transaction rolled back whole to break a lock conflict: serialization
# failure, deadlock detected. Nothing of it was written, so it may simply run again.
_ROLLED_BACK_FOR_LOCKS = ("40001", "40P01")


def lock_conflict(error: BaseException) -> bool:
    """True when ``error`` (or what caused it, e.g. ``BillingUnavailable``) is a deadlock
    or a serialization failure: the transaction was rolled back and may be retried."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, exc.DBAPIError):
            return getattr(seen.orig, "sqlstate", None) in _ROLLED_BACK_FOR_LOCKS
        seen = seen.__cause__
    return False


# -- portable statements (SQLite, and shrinking on both) ---------------------------------

# FOR NO KEY UPDATE on PostgreSQL (SQLite has no row locks: BEGIN IMMEDIATE serializes).
LOCK_OPEN_HOLD = (
    select(_h.account_id, _h.amount, _h.reference)
    .where(_h.id == _p_hold, _h.status == "open")
    .with_for_update(key_share=True)
)
TAKE_FROM_HOLD = update(HOLDS).where(_h.id == _p_hold).values(amount=_h.amount - _p_take)
ESCROWED_ACCOUNT = (
    update(ACCOUNTS)
    .where(_a.id == _p_account)
    .values(balance=_a.balance - _p_micro, held=_a.held - _p_take, updated_at=_p_now)
    .returning(_a.balance, _a.held)
)
RELEASE_HELD = update(ACCOUNTS).where(_a.id == _p_account).values(held=_a.held - _p_take, updated_at=_p_now)

# -- PostgreSQL: fused statements --------------------------------------------------------

# Statement 1: the call's hold row (nothing else happens on a conflict: ``e`` joins it),
# then the escrow (locked, so ``taken`` is computed from its latest committed amount),
# then the account, whose SET reads ``t`` and so runs after it: hold -> account.
PG_ESCROWED_1_SQL = """
WITH c AS (
    INSERT INTO holds (id, account_id, amount, status, expires_at, reference, charged, created_at,
        resolved_at)
    VALUES (:call_id, :account_id, 0, 'settled', :now, :reference, :micro, :now, :now)
    ON CONFLICT (id) DO NOTHING
    RETURNING account_id
), e AS (
    SELECT holds.id, holds.amount, holds.reference FROM holds JOIN c ON holds.account_id = c.account_id
    WHERE holds.id = :escrow_id AND holds.status = 'open'
    FOR NO KEY UPDATE OF holds
), t AS (
    UPDATE holds SET amount = holds.amount - LEAST(e.amount, :micro)
    FROM e WHERE holds.id = e.id
    RETURNING LEAST(e.amount, :micro) AS taken, e.reference
), a AS (
    UPDATE accounts SET balance = accounts.balance - :micro,
        held = accounts.held - COALESCE((SELECT taken FROM t), 0), updated_at = :now
    FROM c WHERE accounts.id = c.account_id
    RETURNING accounts.balance, accounts.held
)
SELECT a.balance, a.held, COALESCE((SELECT taken FROM t), 0), (SELECT reference FROM t) FROM a
"""
PG_ESCROWED_1 = text(PG_ESCROWED_1_SQL)

# Statement 2: the escrow's release entry only when it gave anything.
PG_ESCROWED_2_SQL = charge_sql(
    """SELECT CAST(:account_id AS bigint), 'release', CAST(0 AS bigint), -CAST(:taken AS bigint),
        CAST(NULL AS bigint), CAST(:escrow_id AS text), CAST(:release_reason AS text),
        CAST(:escrow_reference AS text), CAST(:now AS timestamptz)
    WHERE CAST(:taken AS bigint) > 0""",
    "call_id",
)
PG_ESCROWED_2 = text(PG_ESCROWED_2_SQL)


def release_reason(call_id: str) -> str:
    return f"lent to call {call_id}"


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
    """Charge a call lent from ``escrow_hold_id``; None (nothing written) when ``call_id`` exists."""
    charge = _Charge(call_id, account_id, micro, reference, charge_reason(usage), now)
    if conn.dialect.name == "postgresql":
        return _settle_escrowed_pg(conn, escrow_hold_id, charge, usage)
    inserted = conn.execute(INSERT_UNHELD[conn.dialect.name], _call_hold_row(charge))
    if inserted.rowcount != 1:
        return None
    escrow = conn.execute(LOCK_OPEN_HOLD, {"p_hold": escrow_hold_id}).first()
    taken = 0
    entries: list[dict[str, Any]] = []
    if escrow is not None and escrow.account_id == account_id:
        taken = min(escrow.amount, micro)
        if taken > 0:
            conn.execute(TAKE_FROM_HOLD, {"p_hold": escrow_hold_id, "p_take": taken})
            entries.append(lent_release_entry(charge, escrow_hold_id, taken, escrow.reference))
    balance, held = conn.execute(
        ESCROWED_ACCOUNT, {"p_account": account_id, "p_micro": micro, "p_take": taken, "p_now": now}
    ).one()
    entries.extend(burn(conn, charge))
    if entries:
        conn.execute(INSERT_ENTRY, entries)
    event_id = insert_usage(conn, charge, usage)
    return settlement(charge.hold_id, charge.account_id, charge.micro, charge.now, event_id, balance, held)


def _settle_escrowed_pg(
    conn: Connection, escrow_hold_id: str, charge: _Charge, usage: UsageRecord
) -> Settlement | None:
    row = conn.execute(
        PG_ESCROWED_1,
        {
            "call_id": charge.hold_id,
            "account_id": charge.account_id,
            "escrow_id": escrow_hold_id,
            "micro": charge.micro,
            "reference": charge.reference,
            "now": charge.now,
        },
    ).first()
    if row is None:
        return None
    balance, held, taken, escrow_reference = row
    event_id, grant_id = conn.execute(
        PG_ESCROWED_2,
        {
            "call_id": charge.hold_id,
            "account_id": charge.account_id,
            "escrow_id": escrow_hold_id,
            "escrow_reference": escrow_reference or "",
            "taken": taken,
            "micro": charge.micro,
            "now": charge.now,
            "reference": charge.reference,
            "release_reason": release_reason(charge.hold_id),
            "charge_reason": charge.reason,
            **usage_params(usage),
        },
    ).one()
    if grant_id is None and charge.micro > 0:
        # The first live grant did not cover it: burn grant by grant, the rest is debt.
        conn.execute(INSERT_ENTRY, burn_loop(conn, charge))
    return settlement(charge.hold_id, charge.account_id, charge.micro, charge.now, event_id, balance, held)


def _call_hold_row(charge: _Charge) -> dict[str, Any]:
    return {
        "id": charge.hold_id,
        "account_id": charge.account_id,
        "amount": 0,
        "status": "settled",
        "expires_at": charge.now,
        "reference": charge.reference,
        "charged": charge.micro,
        "created_at": charge.now,
        "resolved_at": charge.now,
    }


def lent_release_entry(
    charge: _Charge, escrow_hold_id: str, taken: int, escrow_reference: str
) -> dict[str, Any]:
    return release_entry(
        charge.account_id, escrow_hold_id, taken, release_reason(charge.hold_id), escrow_reference, charge.now
    )


def settlement(
    call_id: str, account_id: int, micro: int, now: datetime, event_id: int, balance: int, held: int
) -> Settlement:
    # held=0 and late=False: what a repeat reads back from the call's own hold row
    # (amount 0, settled), so the first result and a repeat compare equal.
    return Settlement(
        hold_id=call_id,
        account_id=account_id,
        held=0,
        charged=micro,
        usage_event_id=event_id,
        late=False,
        settled_at=now,
        balance_after=balance,
        available_after=balance - held,
    )


def shrink(conn: Connection, hold_id: str, micro: int, now: datetime) -> int:
    """Give up to ``micro`` of an open hold back to its account; returns how much (0 unless open).

    Locks the hold, then the account: the order of ``settle_escrowed`` and of the
    journal's batches.
    """
    row = conn.execute(LOCK_OPEN_HOLD, {"p_hold": hold_id}).first()
    if row is None:
        return 0
    taken = int(min(row.amount, micro))
    if taken == 0:
        return 0
    conn.execute(TAKE_FROM_HOLD, {"p_hold": hold_id, "p_take": taken})
    conn.execute(RELEASE_HELD, {"p_account": row.account_id, "p_take": taken, "p_now": now})
    reason = "escrow shrunk: credit no longer lent"
    conn.execute(INSERT_ENTRY, release_entry(row.account_id, hold_id, taken, reason, row.reference, now))
    return taken

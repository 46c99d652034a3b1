"""The hot path: ``hold`` and ``settle`` as a few prebuilt Core statements.

No ORM unit of work here (it was 77 % of a SQLite cycle): each call runs statements
built once at import, and every figure the caller needs comes back from the
statements' own ``RETURNING`` clauses, so nothing is read twice.

The invariants are the same as in the ORM code paths (``holds``, ``grants``):

- a hold is one conditional ``UPDATE accounts`` (checked by the database under its
  row lock, so two proxies cannot spend the same credit), its row and its entry;
- a settle's ``UPDATE holds ... WHERE status = 'open' RETURNING`` is the exactly-once
  check: only one caller can move a hold out of ``open``; anyone else (a repeat, a
  late settle of a voided or expired hold) gets no row and takes the slow path;
- locks are taken hold -> account -> grants, like every other operation;
- grants burn in the fixed order (priority, soonest expiry, oldest); the common case
  (the first live grant covers the charge) is one ``UPDATE``, otherwise a small loop
  over the live grants, the rest becoming debt.

PostgreSQL gets fused statements (data-modifying CTEs): a hold is ONE statement in
autocommit mode (one round trip, no BEGIN/COMMIT), a settle is two statements in one
transaction. SQLite, where a round trip is a function call, runs the portable
statements in its ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    String,
    Table,
    bindparam,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from .ids import new_hold_id
from .tables import UTCDateTime, metadata
from .types import Balance, Hold, Settlement, UsageRecord

# RETURNING needs SQLite 3.35; older libraries take the ORM code paths.
SQLITE_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

HOLD_REASON = "hold for the worst case of a call"

ACCOUNTS: Table = metadata.tables["accounts"]
HOLDS: Table = metadata.tables["holds"]
GRANTS: Table = metadata.tables["grants"]
ENTRIES: Table = metadata.tables["entries"]
USAGE_EVENTS: Table = metadata.tables["usage_events"]

_a = ACCOUNTS.c
_h = HOLDS.c
_g = GRANTS.c

_p_account = bindparam("p_account", type_=BigInteger())
_p_micro = bindparam("p_micro", type_=BigInteger())
_p_amount = bindparam("p_amount", type_=BigInteger())
_p_now = bindparam("p_now", type_=UTCDateTime())
_p_hold = bindparam("p_hold", type_=String())
_p_grant = bindparam("p_grant", type_=BigInteger())
_p_take = bindparam("p_take", type_=BigInteger())
_p_left = bindparam("p_left", type_=BigInteger())

# -- portable statements (SQLite; and PostgreSQL's rare paths) -------------------------

HOLD_ACCOUNT = (
    update(ACCOUNTS)
    .where(
        _a.id == _p_account,
        _a.status == "active",
        _a.balance - _a.held - _p_micro >= -_a.overdraft_limit,
    )
    .values(held=_a.held + _p_micro, updated_at=_p_now)
    .returning(_a.balance, _a.held)
)
INSERT_HOLD = insert(HOLDS)
INSERT_ENTRY = insert(ENTRIES)
INSERT_USAGE = insert(USAGE_EVENTS).returning(USAGE_EVENTS.c.id)

SETTLE_HOLD = (
    update(HOLDS)
    .where(_h.id == _p_hold, _h.status == "open")
    .values(status="settled", charged=_p_micro, resolved_at=_p_now)
    .returning(_h.account_id, _h.amount, _h.reference)
)
SETTLE_ACCOUNT = (
    update(ACCOUNTS)
    .where(_a.id == _p_account)
    .values(held=_a.held - _p_amount, balance=_a.balance - _p_micro, updated_at=_p_now)
    .returning(_a.balance, _a.held)
)


def _live_grants(g: Any) -> Any:
    return (
        select(g.c.id, g.c.remaining)
        .where(
            g.c.account_id == _p_account,
            g.c.remaining > 0,
            # A grant past its expiry is spent by nobody, even before the sweeper runs.
            or_(g.c.expires_at.is_(None), g.c.expires_at > _p_now),
        )
        .order_by(
            g.c.priority.desc(),
            g.c.expires_at.asc().nulls_last(),
            g.c.created_at.asc(),
            g.c.id.asc(),
        )
    )


_first = GRANTS.alias("first_grant")
# The common case in one statement: the first live grant in burn-down order covers the
# whole charge. (The caller holds the account row lock, and every writer of an
# account's grants takes that lock first, so the choice cannot go stale.)
BURN_FIRST = (
    update(GRANTS)
    .where(
        _g.id == _live_grants(_first).with_only_columns(_first.c.id).limit(1).scalar_subquery(),
        _g.remaining >= _p_micro,
    )
    .values(remaining=_g.remaining - _p_micro)
    .returning(_g.id)
)
LIVE_GRANTS = _live_grants(GRANTS).with_for_update()
BURN_ONE = update(GRANTS).where(_g.id == _p_grant).values(remaining=_g.remaining - _p_take)
ADD_DEBT = update(ACCOUNTS).where(_a.id == _p_account).values(debt=_a.debt + _p_left)

_p_until = bindparam("p_until", type_=UTCDateTime())
RENEW_HOLD = (
    update(HOLDS)
    .where(_h.id == _p_hold, _h.status == "open", _h.expires_at < _p_until)
    .values(expires_at=_p_until)
)
BALANCE = select(_a.balance, _a.held, _a.overdraft_limit, _a.debt).where(_a.id == _p_account)
HOLD_IS_OPEN = select(_h.id).where(_h.id == _p_hold, _h.status == "open")

# settle_unheld: the hold row is born settled; its primary key makes a repeat a no-op.
INSERT_UNHELD = {
    "postgresql": postgresql.insert(HOLDS).on_conflict_do_nothing(index_elements=[_h.id]),
    "sqlite": sqlite.insert(HOLDS).on_conflict_do_nothing(index_elements=[_h.id]),
}
UNHELD_ACCOUNT = (
    update(ACCOUNTS)
    .where(_a.id == _p_account)
    .values(balance=_a.balance - _p_micro, updated_at=_p_now)
    .returning(_a.balance, _a.held)
)

# -- PostgreSQL: fused statements ------------------------------------------------------

# the first live grant in burn-down order (``_live_grants``'s); ``settle_batch_function``
# builds its grant burn from it too
LIVE_FIRST_SQL = """
    SELECT id FROM grants
    WHERE account_id = :account_id AND remaining > 0 AND (expires_at IS NULL OR expires_at > :now)
    ORDER BY priority DESC, expires_at ASC NULLS LAST, created_at ASC, id ASC
    LIMIT 1"""

# One statement, one transaction, one round trip: the conditional UPDATE, the hold row
# and its entry. If the UPDATE matches nothing, neither insert sees a row.
PG_HOLD = text(
    """
WITH a AS (
    UPDATE accounts SET held = held + :micro, updated_at = :now
    WHERE id = :account_id AND status = 'active' AND balance - held - :micro >= -overdraft_limit
    RETURNING id, balance, held
), h AS (
    INSERT INTO holds (id, account_id, amount, status, expires_at, reference, created_at)
    SELECT :hold_id, a.id, :micro, 'open', :expires_at, :reference, :now FROM a
    RETURNING id
)
INSERT INTO entries (account_id, kind, amount, held_delta, hold_id, reason, reference, created_at)
SELECT a.id, 'hold', 0, :micro, h.id, :reason, :reference, :now FROM a, h
RETURNING (SELECT balance FROM a), (SELECT held FROM a)
"""
)

# Settle, statement 1: close the hold (the exactly-once check) and update the account it
# names, in that lock order (the account UPDATE reads the hold UPDATE's row).
PG_SETTLE_1_SQL = """
WITH h AS (
    UPDATE holds SET status = 'settled', charged = :micro, resolved_at = :now
    WHERE id = :hold_id AND status = 'open'
    RETURNING account_id, amount, reference
), a AS (
    UPDATE accounts SET held = accounts.held - h.amount, balance = accounts.balance - :micro,
        updated_at = :now
    FROM h WHERE accounts.id = h.account_id
    RETURNING accounts.balance, accounts.held
)
SELECT h.account_id, h.amount, h.reference, a.balance, a.held FROM h, a
"""
PG_SETTLE_1 = text(PG_SETTLE_1_SQL)


def charge_sql(release: str, call_param: str) -> str:
    """A fused settle's statement 2, around ``release`` (the SELECT of its release entry).

    A new statement, so under READ COMMITTED it sees every grant change committed before
    the account lock was taken: burn the first live grant when it covers the charge,
    write the release and charge entries (in that order) and the usage event (whose
    UNIQUE(hold_id) stays the database's own backstop). The call's id is the
    ``call_param`` parameter.
    """
    return f"""
WITH g AS (
    UPDATE grants SET remaining = remaining - :micro
    WHERE id = ({LIVE_FIRST_SQL}) AND remaining >= :micro AND :micro > 0
    RETURNING id
), e AS (
    INSERT INTO entries (account_id, kind, amount, held_delta, grant_id, hold_id, reason, reference,
        created_at)
    {release}
    UNION ALL
    SELECT :account_id, 'charge', -CAST(:micro AS bigint), 0, g.id, :{call_param}, :charge_reason,
        :reference, :now
    FROM g
), u AS (
    INSERT INTO usage_events (hold_id, account_id, api_key_hash, user_id, team_id, end_user_id,
        model, provider, call_type, tokens_in, tokens_out, provider_cost_usd, markup_rule,
        catalog_version, charged, cache_hit, stream, created_at, byok)
    VALUES (:{call_param}, :account_id, :api_key_hash, :user_id, :team_id, :end_user_id, :model,
        :provider, :call_type, :tokens_in, :tokens_out, :provider_cost_usd, :markup_rule,
        :catalog_version, :micro, :cache_hit, :stream, :now, :byok)
    RETURNING id
)
SELECT u.id, (SELECT id FROM g) FROM u
"""


# Settle, statement 2: the hold's release entry ('settled', the whole hold).
PG_SETTLE_2_SQL = charge_sql(
    """SELECT CAST(:account_id AS bigint), 'release', CAST(0 AS bigint), -CAST(:amount AS bigint),
        CAST(NULL AS bigint), CAST(:hold_id AS text), 'settled', CAST(:reference AS text),
        CAST(:now AS timestamptz)""",
    "hold_id",
)
PG_SETTLE_2 = text(PG_SETTLE_2_SQL)


# -- operations --------------------------------------------------------------------------


def hold(
    conn: Connection, account_id: int, micro: int, *, ttl_seconds: float, reference: str, now: datetime
) -> Hold | None:
    """Place a hold; None when the conditional UPDATE matched nothing (the caller explains)."""
    hold_id = new_hold_id()
    expires_at = now + timedelta(seconds=ttl_seconds)
    if conn.dialect.name == "postgresql":
        row = conn.execute(
            PG_HOLD,
            {
                "account_id": account_id,
                "micro": micro,
                "now": now,
                "hold_id": hold_id,
                "expires_at": expires_at,
                "reference": reference,
                "reason": HOLD_REASON,
            },
        ).first()
        if row is None:
            return None
        balance, held = row
    else:
        row = conn.execute(HOLD_ACCOUNT, {"p_account": account_id, "p_micro": micro, "p_now": now}).first()
        if row is None:
            return None
        balance, held = row
        conn.execute(
            INSERT_HOLD,
            {
                "id": hold_id,
                "account_id": account_id,
                "amount": micro,
                "status": "open",
                "expires_at": expires_at,
                "reference": reference,
                "created_at": now,
            },
        )
        conn.execute(
            INSERT_ENTRY,
            {
                "account_id": account_id,
                "kind": "hold",
                "amount": 0,
                "held_delta": micro,
                "hold_id": hold_id,
                "reason": HOLD_REASON,
                "reference": reference,
                "created_at": now,
            },
        )
    return Hold(
        id=hold_id,
        account_id=account_id,
        amount=micro,
        status="open",
        expires_at=expires_at,
        reference=reference,
        charged=None,
        created_at=now,
        resolved_at=None,
        balance_after=balance,
        available_after=balance - held,
    )


@dataclass(frozen=True, slots=True)
class _Charge:
    """What a settle writes besides the hold: shared by ``settle`` and ``settle_unheld``."""

    hold_id: str
    account_id: int
    micro: int
    reference: str
    reason: str
    now: datetime


def charge_reason(usage: UsageRecord) -> str:
    return f"call {usage.model}".strip()


def settle(
    conn: Connection, hold_id: str, micro: int, usage: UsageRecord, now: datetime
) -> Settlement | None:
    """Settle an OPEN hold; None (nothing written) when it is not open or does not exist."""
    reason = charge_reason(usage)
    if conn.dialect.name == "postgresql":
        return _settle_pg(conn, hold_id, micro, usage, now, reason)
    row = conn.execute(SETTLE_HOLD, {"p_hold": hold_id, "p_micro": micro, "p_now": now}).first()
    if row is None:
        return None
    account_id, amount, reference = row
    balance, held = conn.execute(
        SETTLE_ACCOUNT, {"p_account": account_id, "p_amount": amount, "p_micro": micro, "p_now": now}
    ).one()
    charge = _Charge(hold_id, account_id, micro, reference, reason, now)
    entries = [release_entry(account_id, hold_id, amount, "settled", reference, now)]
    entries.extend(burn(conn, charge))
    conn.execute(INSERT_ENTRY, entries)
    event_id = insert_usage(conn, charge, usage)
    return settled(hold_id, account_id, amount, micro, event_id, now, balance, held)


def settled(
    hold_id: str,
    account_id: int,
    amount: int,
    micro: int,
    event_id: int,
    now: datetime,
    balance: int,
    held: int,
) -> Settlement:
    """The result of a fresh settle, from the figures its statements returned."""
    return Settlement(
        hold_id=hold_id,
        account_id=account_id,
        held=amount,
        charged=micro,
        usage_event_id=event_id,
        late=False,
        settled_at=now,
        balance_after=balance,
        available_after=balance - held,
    )


def _settle_pg(
    conn: Connection, hold_id: str, micro: int, usage: UsageRecord, now: datetime, reason: str
) -> Settlement | None:
    row = conn.execute(PG_SETTLE_1, {"hold_id": hold_id, "micro": micro, "now": now}).first()
    if row is None:
        return None
    account_id, amount, reference, balance, held = row
    event_id, grant_id = conn.execute(
        PG_SETTLE_2,
        {
            "hold_id": hold_id,
            "account_id": account_id,
            "amount": amount,
            "micro": micro,
            "now": now,
            "reference": reference,
            "charge_reason": reason,
            **usage_params(usage),
        },
    ).one()
    if grant_id is None and micro > 0:
        # The first live grant did not cover it: burn grant by grant, the rest is debt.
        entries = burn_loop(conn, _Charge(hold_id, account_id, micro, reference, reason, now))
        conn.execute(INSERT_ENTRY, entries)
    return settled(hold_id, account_id, amount, micro, event_id, now, balance, held)


def burn(conn: Connection, charge: _Charge) -> list[dict[str, Any]]:
    """Take ``charge.micro`` from the account's live grants (the account row is locked).

    Returns the charge entries to insert; the account's balance is the caller's to move.
    """
    if charge.micro <= 0:
        return []
    first = conn.execute(
        BURN_FIRST, {"p_account": charge.account_id, "p_micro": charge.micro, "p_now": charge.now}
    ).first()
    if first is not None:
        return [_charge_entry(charge, first[0], charge.micro, charge.reason)]
    return burn_loop(conn, charge)


def burn_loop(conn: Connection, charge: _Charge) -> list[dict[str, Any]]:
    """Burn grant by grant in burn-down order; what no grant covers becomes debt."""
    left = charge.micro
    entries: list[dict[str, Any]] = []
    takes: list[dict[str, Any]] = []
    for grant_id, remaining in conn.execute(
        LIVE_GRANTS, {"p_account": charge.account_id, "p_now": charge.now}
    ):
        if left == 0:
            break
        take = min(left, remaining)
        left -= take
        takes.append({"p_grant": grant_id, "p_take": take})
        entries.append(_charge_entry(charge, grant_id, take, charge.reason))
    if takes:
        conn.execute(BURN_ONE, takes)
    if left > 0:
        conn.execute(ADD_DEBT, {"p_account": charge.account_id, "p_left": left})
        entries.append(
            _charge_entry(charge, None, left, f"{charge.reason} (not covered by any grant: debt)".strip())
        )
    return entries


def release_entry(
    account_id: int, hold_id: str, amount: int, reason: str, reference: str, now: datetime
) -> dict[str, Any]:
    """The entry that takes ``amount`` of a hold out of the account's held credit."""
    return {
        "account_id": account_id,
        "kind": "release",
        "amount": 0,
        "held_delta": -amount,
        "grant_id": None,
        "hold_id": hold_id,
        "reason": reason,
        "reference": reference,
        "created_at": now,
    }


def _charge_entry(charge: _Charge, grant_id: int | None, take: int, reason: str) -> dict[str, Any]:
    return {
        "account_id": charge.account_id,
        "kind": "charge",
        "amount": -take,
        "held_delta": 0,
        "grant_id": grant_id,
        "hold_id": charge.hold_id,
        "reason": reason,
        "reference": charge.reference,
        "created_at": charge.now,
    }


def usage_params(usage: UsageRecord) -> dict[str, Any]:
    return {
        "api_key_hash": usage.api_key_hash,
        "user_id": usage.user_id,
        "team_id": usage.team_id,
        "end_user_id": usage.end_user_id,
        "model": usage.model,
        "provider": usage.provider,
        "call_type": usage.call_type,
        "tokens_in": usage.tokens_in,
        "tokens_out": usage.tokens_out,
        "provider_cost_usd": usage.provider_cost_usd,
        "markup_rule": usage.markup_rule,
        "catalog_version": usage.catalog_version,
        "cache_hit": usage.cache_hit,
        "stream": usage.stream,
        "byok": usage.byok,
    }


def insert_usage(conn: Connection, charge: _Charge, usage: UsageRecord) -> int:
    params = usage_params(usage)
    params.update(
        hold_id=charge.hold_id, account_id=charge.account_id, charged=charge.micro, created_at=charge.now
    )
    return int(conn.execute(INSERT_USAGE, params).scalar_one())


def settle_unheld(
    conn: Connection,
    hold_id: str,
    account_id: int,
    micro: int,
    usage: UsageRecord,
    *,
    reference: str,
    now: datetime,
) -> Settlement | None:
    """Charge a call served without a hold; None (nothing written) when ``hold_id`` exists.

    The hold row is inserted already settled (amount 0, charged ``micro``), then the
    account, the grants, the charge entries and the usage event, like a settle without
    the release. No overdraft check: the call was served.
    """
    inserted = conn.execute(
        INSERT_UNHELD[conn.dialect.name],
        {
            "id": hold_id,
            "account_id": account_id,
            "amount": 0,
            "status": "settled",
            "expires_at": now,
            "reference": reference,
            "charged": micro,
            "created_at": now,
            "resolved_at": now,
        },
    )
    if inserted.rowcount != 1:
        return None
    balance, held = conn.execute(
        UNHELD_ACCOUNT, {"p_account": account_id, "p_micro": micro, "p_now": now}
    ).one()
    charge = _Charge(hold_id, account_id, micro, reference, charge_reason(usage), now)
    entries = burn(conn, charge)
    if entries:
        conn.execute(INSERT_ENTRY, entries)
    event_id = insert_usage(conn, charge, usage)
    return Settlement(
        hold_id=hold_id,
        account_id=account_id,
        held=0,
        charged=micro,
        usage_event_id=event_id,
        late=False,
        settled_at=now,
        balance_after=balance,
        available_after=balance - held,
    )


def balance(conn: Connection, account_id: int) -> Balance | None:
    row = conn.execute(BALANCE, {"p_account": account_id}).first()
    if row is None:
        return None
    bal, held, overdraft_limit, debt = row
    return Balance(
        account_id=account_id,
        balance=bal,
        held=held,
        available=bal - held,
        overdraft_limit=overdraft_limit,
        debt=debt,
    )


def renew(conn: Connection, hold_id: str, until: datetime) -> bool:
    """Push an open hold's expiry out to ``until`` (never earlier); False unless open."""
    result = conn.execute(RENEW_HOLD, {"p_hold": hold_id, "p_until": until})
    if result.rowcount == 1:
        return True
    # Matched nothing: either not open, or already expiring after ``until``.
    return conn.execute(HOLD_IS_OPEN, {"p_hold": hold_id}).first() is not None

"""PostgreSQL: a journal batch in ONE statement, parsed and booked by the server.

``settle_batch`` books a batch in a fixed number of statements, but the writer still
built every charge's rows in Python: a release entry, a charge entry and a usage event
per call, each a dict, then JSON. That was some 22 us of the interpreter lock per charge,
on the thread that shares the lock with the calls being served: with one call at a
time, the calls recording into the journal ran 20-25 % faster while its writer was
idle. ``credits_settle_batch_v1`` takes the batch as the journal wrote it (its lines,
joined into one JSON array: no work per charge on this side), and does the same
statements as ``settle_batch`` inside PL/pgSQL, each with a snapshot of its own as the
client's would have under READ COMMITTED, in the same order: lock the escrows, close
the held calls' holds, insert the lent calls' hold rows, take each lent charge from its
escrow in the batch's order, shrink the escrows, move the accounts, burn each
account's summed charge from its first live grant, write the entries and the usage
events in the order ``settle_batch`` writes them.

The rare case, an account whose first live grant does not cover its charges, raises
``settle_function.NEEDS_BURN_LOOP``: nothing is written and the caller books the batch
with ``settle_batch`` (grant by grant, the rest debt). A database without the function
(not migrated to 0004) is noticed on the first batch, and the statements are used from
then on. Migration 0004 keeps a frozen copy of ``create_sql()``; a test holds them equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from . import hotpath
from .settle_function import NEEDS_BURN_LOOP, UNDEFINED_FUNCTION, Unavailable

if TYPE_CHECKING:
    from .outbox import PendingCharge  # which imports the service: only a type here

NAME = "credits_settle_batch_v1"

# The batch's charges as rows, ``n`` their place in it; a kind's first charge of a hold
# id is the one booked (as ``settle_batch._first``).
_BATCH = """
        SELECT c->>'hold_id' AS id, CAST(c->>'micro' AS bigint) AS micro,
            CAST(c->>'account_id' AS bigint) AS account_id, c->>'escrow_hold_id' AS escrow_id,
            c->'usage' AS usage, n
        FROM jsonb_array_elements(p_charges) WITH ORDINALITY AS t(c, n)"""

_EVENT_TEXTS = (
    "api_key_hash",
    "user_id",
    "team_id",
    "end_user_id",
    "model",
    "provider",
    "call_type",
    "markup_rule",
    "catalog_version",
)
_EVENT_CASTS = (
    ("tokens_in", "bigint"),
    ("tokens_out", "bigint"),
    ("provider_cost_usd", "numeric"),
    ("cache_hit", "boolean"),
    ("stream", "boolean"),
    ("byok", "boolean"),
)


def _event_columns() -> tuple[str, str]:
    """The usage event's columns, and their definitions for ``jsonb_to_record``."""
    columns = [(name, "text") for name in _EVENT_TEXTS] + list(_EVENT_CASTS)
    return ", ".join(name for name, _ in columns), ", ".join(f"{name} {kind}" for name, kind in columns)


def _event_values() -> str:
    return ", ".join(f"u.{name}" for name in [*_EVENT_TEXTS, *(name for name, _ in _EVENT_CASTS)])


def _body() -> str:
    event_names, event_record = _event_columns()
    live_first = hotpath.LIVE_FIRST_SQL.replace(":account_id", "v_account.account_id").replace(
        ":now", "p_now"
    )
    return f"""DECLARE
    v_closed_id text[];
    v_closed_account bigint[];
    v_closed_amount bigint[];
    v_closed_reference text[];
    v_fresh text[];
    v_n bigint[];
    v_id text[];
    v_account_id bigint[];
    v_micro bigint[];
    v_release bigint[];
    v_release_hold text[];
    v_release_reason text[];
    v_release_reference text[];
    v_reference text[];
    v_lent boolean[];
    v_usage jsonb[];
    v_account record;
    v_grant bigint;
    v_grant_account bigint[] := '{{}}';
    v_grant_id bigint[] := '{{}}';
BEGIN
-- 1. lock the open escrows the lent calls borrowed from, in id order
PERFORM 1 FROM holds
WHERE id IN (SELECT b.escrow_id FROM ({_BATCH}) b WHERE b.escrow_id IS NOT NULL AND b.account_id IS NOT NULL)
    AND status = 'open'
ORDER BY id FOR NO KEY UPDATE;
-- 2. close the open holds of the held calls: the exactly-once check
WITH firsts AS (
    SELECT DISTINCT ON (b.id) b.id, b.micro FROM ({_BATCH}) b
    WHERE b.escrow_id IS NULL ORDER BY b.id, b.n
), closed AS (
    UPDATE holds SET status = 'settled', charged = firsts.micro, resolved_at = p_now
    FROM firsts WHERE holds.id = firsts.id AND holds.status = 'open'
    RETURNING holds.id, holds.account_id, holds.amount, holds.reference
)
SELECT array_agg(id), array_agg(account_id), array_agg(amount), array_agg(reference)
    INTO v_closed_id, v_closed_account, v_closed_amount, v_closed_reference
    FROM closed;
-- 3. the lent calls' own hold rows, born settled (a call charged before is skipped)
WITH firsts AS (
    SELECT DISTINCT ON (b.id) b.id, b.account_id, b.micro, b.n FROM ({_BATCH}) b
    WHERE b.escrow_id IS NOT NULL AND b.account_id IS NOT NULL ORDER BY b.id, b.n
), fresh AS (
    INSERT INTO holds (id, account_id, amount, status, expires_at, reference, charged, created_at, resolved_at)
    SELECT firsts.id, firsts.account_id, 0, 'settled', p_now, '', firsts.micro, p_now, p_now
    FROM firsts ORDER BY firsts.n
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT array_agg(id) INTO v_fresh FROM fresh;
-- 4. every call charged now, in the order of its entries and event (account, the held
-- calls, the lent ones, each in the batch's order), with what leaves the held credit: a
-- held call's whole hold; a lent call's charge, taken from its escrow in the batch's
-- order while the escrow lasts
WITH b AS ({_BATCH}
), held AS (
    SELECT DISTINCT ON (b.id) b.n, b.id, h.account_id, b.micro, h.amount AS release,
        b.id AS release_hold, 'settled' AS release_reason, h.reference AS release_reference,
        h.reference, false AS lent, b.usage
    FROM b JOIN unnest(v_closed_id, v_closed_account, v_closed_amount, v_closed_reference)
        AS h(id, account_id, amount, reference) ON h.id = b.id
    WHERE b.escrow_id IS NULL ORDER BY b.id, b.n
), lent AS (
    SELECT DISTINCT ON (b.id) b.n, b.id, b.account_id, b.micro, b.escrow_id, b.usage
    FROM b WHERE b.escrow_id IS NOT NULL AND b.account_id IS NOT NULL AND b.id = ANY(v_fresh)
    ORDER BY b.id, b.n
), taken AS (
    SELECT lent.*, e.reference AS escrow_reference,
        CASE WHEN e.id IS NULL THEN 0 ELSE least(lent.micro, greatest(0, e.amount - coalesce(
            sum(lent.micro) OVER (PARTITION BY e.id ORDER BY lent.n
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) END AS taken
    FROM lent LEFT JOIN holds e
        ON e.id = lent.escrow_id AND e.status = 'open' AND e.account_id = lent.account_id
), charged AS (
    SELECT n, id, account_id, micro, release, release_hold, release_reason, release_reference,
        reference, lent, usage
    FROM held
    UNION ALL
    SELECT n, id, account_id, micro, taken, escrow_id, 'lent to call ' || id, escrow_reference,
        '', true, usage
    FROM taken
)
SELECT array_agg(n ORDER BY account_id, lent, n), array_agg(id ORDER BY account_id, lent, n),
    array_agg(account_id ORDER BY account_id, lent, n), array_agg(micro ORDER BY account_id, lent, n),
    array_agg(release ORDER BY account_id, lent, n), array_agg(release_hold ORDER BY account_id, lent, n),
    array_agg(release_reason ORDER BY account_id, lent, n),
    array_agg(release_reference ORDER BY account_id, lent, n),
    array_agg(reference ORDER BY account_id, lent, n), array_agg(lent ORDER BY account_id, lent, n),
    array_agg(usage ORDER BY account_id, lent, n)
    INTO v_n, v_id, v_account_id, v_micro, v_release, v_release_hold, v_release_reason,
        v_release_reference, v_reference, v_lent, v_usage
    FROM charged;
IF v_id IS NULL THEN
    RETURN QUERY SELECT DISTINCT b.id FROM ({_BATCH}) b;
    RETURN;
END IF;
-- 5. the escrows' new amounts
UPDATE holds SET amount = holds.amount - t.taken
FROM (
    SELECT r.hold, sum(r.release) AS taken
    FROM unnest(v_release_hold, v_release, v_lent) AS r(hold, release, lent)
    WHERE r.lent GROUP BY r.hold HAVING sum(r.release) > 0
) t
WHERE holds.id = t.hold;
-- 6. each account's summed release and charge
UPDATE accounts SET held = accounts.held - t.released, balance = accounts.balance - t.charged,
    updated_at = p_now
FROM (
    SELECT r.account_id, sum(r.release) AS released, sum(r.micro) AS charged
    FROM unnest(v_account_id, v_release, v_micro) AS r(account_id, release, micro)
    GROUP BY r.account_id
) t
WHERE accounts.id = t.account_id;
-- 7. per account, its summed charge from its first live grant, a statement each (each
-- sees every grant change committed before it)
FOR v_account IN
    SELECT r.account_id, sum(r.micro) AS total
    FROM unnest(v_account_id, v_micro) AS r(account_id, micro)
    GROUP BY r.account_id ORDER BY r.account_id
LOOP
    v_grant := NULL;
    IF v_account.total > 0 THEN
        UPDATE grants SET remaining = remaining - v_account.total
        WHERE id = ({live_first}) AND remaining >= v_account.total
        RETURNING id INTO v_grant;
        IF v_grant IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '{NEEDS_BURN_LOOP}',
                MESSAGE = 'no single grant covers an account''s charges';
        END IF;
    END IF;
    v_grant_account := v_grant_account || v_account.account_id;
    v_grant_id := v_grant_id || v_grant;
END LOOP;
-- 8. the entries: each call's release (a lent call's only when it took something), then
-- its charge (when it costs anything)
INSERT INTO entries (account_id, kind, amount, held_delta, grant_id, hold_id, reason, reference, created_at)
SELECT e.account_id, e.kind, e.amount, e.held_delta, e.grant_id, e.hold_id, e.reason, e.reference, p_now
FROM (
    SELECT r.account_id, 'release' AS kind, CAST(0 AS bigint) AS amount, -r.release AS held_delta,
        CAST(NULL AS bigint) AS grant_id, r.release_hold AS hold_id, r.release_reason AS reason,
        r.release_reference AS reference, r.o, 0 AS step
    FROM unnest(v_account_id, v_release, v_release_hold, v_release_reason, v_release_reference, v_lent)
        WITH ORDINALITY AS r(account_id, release, release_hold, release_reason, release_reference, lent, o)
    WHERE NOT r.lent OR r.release > 0
    UNION ALL
    SELECT r.account_id, 'charge', -r.micro, 0, g.grant_id, r.id,
        p_reasons->>(r.usage->>'model'), r.reference, r.o, 1
    FROM unnest(v_account_id, v_micro, v_id, v_reference, v_usage)
        WITH ORDINALITY AS r(account_id, micro, id, reference, usage, o)
    JOIN unnest(v_grant_account, v_grant_id) AS g(account_id, grant_id) ON g.account_id = r.account_id
    WHERE r.micro > 0
) e
ORDER BY e.o, e.step;
-- 9. the usage events
INSERT INTO usage_events (hold_id, account_id, {event_names}, charged, created_at)
SELECT r.id, r.account_id, {_event_values()}, r.micro, p_now
FROM unnest(v_id, v_account_id, v_micro, v_usage) WITH ORDINALITY AS r(id, account_id, micro, usage, o),
    jsonb_to_record(r.usage) AS u({event_record})
ORDER BY r.o;
-- the batch's hold ids not charged now, for the one-by-one paths
RETURN QUERY SELECT DISTINCT b.id FROM ({_BATCH}) b WHERE b.id <> ALL(v_id);
END;"""


def create_sql() -> str:
    """The function's DDL (``CREATE OR REPLACE``: running it twice is harmless)."""
    return (
        f"CREATE OR REPLACE FUNCTION {NAME}(\n    p_charges jsonb,\n    p_reasons jsonb,\n"
        f"    p_now timestamptz\n)\nRETURNS SETOF text\n"
        f"LANGUAGE plpgsql VOLATILE AS $function$\n{_body()}\n$function$;\n"
    )


_CALL = text(
    f"SELECT * FROM {NAME}(CAST(:charges AS jsonb), CAST(:reasons AS jsonb), CAST(:now AS timestamptz))"
)


def settle(
    conn: Connection, charges: Sequence[PendingCharge], lines: Sequence[bytes], now: datetime
) -> set[str]:
    """Book ``charges`` (``lines``: each one's ``to_line()``, as the journal wrote it) as
    ``settle_batch.settle`` books them; returns the hold ids charged now.

    ``Unavailable`` (nothing written; the transaction must be rolled back) when the
    function is missing or an account's first live grant does not cover its charges.
    """
    if not charges:
        return set()
    # a charge entry's reason depends on its call's model alone: one per model, not per charge
    models = {charge.usage.model: charge.usage for charge in charges}
    reasons = {model: hotpath.charge_reason(usage) for model, usage in models.items()}
    try:
        rows = conn.execute(
            _CALL,
            {
                "charges": (b"[" + b",".join(lines) + b"]").decode(),
                "reasons": orjson.dumps(reasons).decode(),
                "now": now,
            },
        )
    except DBAPIError as error:
        state = getattr(error.orig, "sqlstate", None)
        if state in (NEEDS_BURN_LOOP, UNDEFINED_FUNCTION):
            raise Unavailable(state) from error
        raise
    left = {row[0] for row in rows}
    return {charge.hold_id for charge in charges if charge.hold_id not in left}

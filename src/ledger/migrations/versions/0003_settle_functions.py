"""PostgreSQL: the settle functions ``credits_settle_v1`` and ``credits_settle_escrowed_v1``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Nothing on SQLite, which has no server-side functions (its settle is in-process anyway).
One round trip per settle. Their text is frozen here as it was at this revision;
``ledger.settle_function`` generates the ones the code calls, and a test holds the two
equal: a change to the settles' statements is a new function version and a migration.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_FUNCTIONS = """\
CREATE OR REPLACE FUNCTION credits_settle_v1(
    p_hold_id text,
    p_micro bigint,
    p_now timestamptz,
    p_charge_reason text,
    p_api_key_hash text,
    p_user_id text,
    p_team_id text,
    p_end_user_id text,
    p_model text,
    p_provider text,
    p_call_type text,
    p_tokens_in bigint,
    p_tokens_out bigint,
    p_provider_cost_usd numeric,
    p_markup_rule text,
    p_catalog_version text,
    p_cache_hit boolean,
    p_stream boolean,
    p_byok boolean
)
RETURNS TABLE (
    o_account_id bigint,
    o_amount bigint,
    o_reference text,
    o_balance bigint,
    o_held bigint,
    o_event_id bigint,
    o_grant_id bigint
)
LANGUAGE plpgsql VOLATILE AS $function$
DECLARE
    v_account_id bigint;
    v_amount bigint;
    v_reference text;
    v_balance bigint;
    v_held bigint;
    v_event_id bigint;
    v_grant_id bigint;
BEGIN
-- statement 1: the exactly-once check and the account
WITH h AS (
    UPDATE holds SET status = 'settled', charged = p_micro, resolved_at = p_now
    WHERE id = p_hold_id AND status = 'open'
    RETURNING account_id, amount, reference
), a AS (
    UPDATE accounts SET held = accounts.held - h.amount, balance = accounts.balance - p_micro,
        updated_at = p_now
    FROM h WHERE accounts.id = h.account_id
    RETURNING accounts.balance, accounts.held
)
SELECT h.account_id, h.amount, h.reference, a.balance, a.held
    INTO v_account_id, v_amount, v_reference, v_balance, v_held
    FROM h, a;
IF NOT FOUND THEN
    RETURN;
END IF;
-- statement 2, a snapshot of its own: the grant, the entries, the usage event
WITH g AS (
    UPDATE grants SET remaining = remaining - p_micro
    WHERE id = (
    SELECT id FROM grants
    WHERE account_id = v_account_id AND remaining > 0 AND (expires_at IS NULL OR expires_at > p_now)
    ORDER BY priority DESC, expires_at ASC NULLS LAST, created_at ASC, id ASC
    LIMIT 1) AND remaining >= p_micro AND p_micro > 0
    RETURNING id
), e AS (
    INSERT INTO entries (account_id, kind, amount, held_delta, grant_id, hold_id, reason, reference,
        created_at)
    SELECT CAST(v_account_id AS bigint), 'release', CAST(0 AS bigint), -CAST(v_amount AS bigint),
        CAST(NULL AS bigint), CAST(p_hold_id AS text), 'settled', CAST(v_reference AS text),
        CAST(p_now AS timestamptz)
    UNION ALL
    SELECT v_account_id, 'charge', -CAST(p_micro AS bigint), 0, g.id, p_hold_id, p_charge_reason,
        v_reference, p_now
    FROM g
), u AS (
    INSERT INTO usage_events (hold_id, account_id, api_key_hash, user_id, team_id, end_user_id,
        model, provider, call_type, tokens_in, tokens_out, provider_cost_usd, markup_rule,
        catalog_version, charged, cache_hit, stream, created_at, byok)
    VALUES (p_hold_id, v_account_id, p_api_key_hash, p_user_id, p_team_id, p_end_user_id, p_model,
        p_provider, p_call_type, p_tokens_in, p_tokens_out, p_provider_cost_usd, p_markup_rule,
        p_catalog_version, p_micro, p_cache_hit, p_stream, p_now, p_byok)
    RETURNING id
)
SELECT u.id, (SELECT id FROM g)
    INTO v_event_id, v_grant_id
    FROM u;
IF v_grant_id IS NULL AND p_micro > 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'LC001',
        MESSAGE = 'no single grant covers the charge';
END IF;
RETURN QUERY SELECT v_account_id, v_amount, v_reference, v_balance, v_held, v_event_id, v_grant_id;
END;
$function$;

CREATE OR REPLACE FUNCTION credits_settle_escrowed_v1(
    p_call_id text,
    p_account_id bigint,
    p_escrow_id text,
    p_micro bigint,
    p_now timestamptz,
    p_reference text,
    p_release_reason text,
    p_charge_reason text,
    p_api_key_hash text,
    p_user_id text,
    p_team_id text,
    p_end_user_id text,
    p_model text,
    p_provider text,
    p_call_type text,
    p_tokens_in bigint,
    p_tokens_out bigint,
    p_provider_cost_usd numeric,
    p_markup_rule text,
    p_catalog_version text,
    p_cache_hit boolean,
    p_stream boolean,
    p_byok boolean
)
RETURNS TABLE (
    o_balance bigint,
    o_held bigint,
    o_taken bigint,
    o_escrow_reference text,
    o_event_id bigint,
    o_grant_id bigint
)
LANGUAGE plpgsql VOLATILE AS $function$
DECLARE
    v_balance bigint;
    v_held bigint;
    v_taken bigint;
    v_escrow_reference text;
    v_event_id bigint;
    v_grant_id bigint;
BEGIN
-- statement 1: the exactly-once check and the account
WITH c AS (
    INSERT INTO holds (id, account_id, amount, status, expires_at, reference, charged, created_at,
        resolved_at)
    VALUES (p_call_id, p_account_id, 0, 'settled', p_now, p_reference, p_micro, p_now, p_now)
    ON CONFLICT (id) DO NOTHING
    RETURNING account_id
), e AS (
    SELECT holds.id, holds.amount, holds.reference FROM holds JOIN c ON holds.account_id = c.account_id
    WHERE holds.id = p_escrow_id AND holds.status = 'open'
    FOR NO KEY UPDATE OF holds
), t AS (
    UPDATE holds SET amount = holds.amount - LEAST(e.amount, p_micro)
    FROM e WHERE holds.id = e.id
    RETURNING LEAST(e.amount, p_micro) AS taken, e.reference
), a AS (
    UPDATE accounts SET balance = accounts.balance - p_micro,
        held = accounts.held - COALESCE((SELECT taken FROM t), 0), updated_at = p_now
    FROM c WHERE accounts.id = c.account_id
    RETURNING accounts.balance, accounts.held
)
SELECT a.balance, a.held, COALESCE((SELECT taken FROM t), 0), (SELECT reference FROM t)
    INTO v_balance, v_held, v_taken, v_escrow_reference
    FROM a;
IF NOT FOUND THEN
    RETURN;
END IF;
-- statement 2, a snapshot of its own: the grant, the entries, the usage event
WITH g AS (
    UPDATE grants SET remaining = remaining - p_micro
    WHERE id = (
    SELECT id FROM grants
    WHERE account_id = p_account_id AND remaining > 0 AND (expires_at IS NULL OR expires_at > p_now)
    ORDER BY priority DESC, expires_at ASC NULLS LAST, created_at ASC, id ASC
    LIMIT 1) AND remaining >= p_micro AND p_micro > 0
    RETURNING id
), e AS (
    INSERT INTO entries (account_id, kind, amount, held_delta, grant_id, hold_id, reason, reference,
        created_at)
    SELECT CAST(p_account_id AS bigint), 'release', CAST(0 AS bigint), -CAST(v_taken AS bigint),
        CAST(NULL AS bigint), CAST(p_escrow_id AS text), CAST(p_release_reason AS text),
        CAST(v_escrow_reference AS text), CAST(p_now AS timestamptz)
    WHERE CAST(v_taken AS bigint) > 0
    UNION ALL
    SELECT p_account_id, 'charge', -CAST(p_micro AS bigint), 0, g.id, p_call_id, p_charge_reason,
        p_reference, p_now
    FROM g
), u AS (
    INSERT INTO usage_events (hold_id, account_id, api_key_hash, user_id, team_id, end_user_id,
        model, provider, call_type, tokens_in, tokens_out, provider_cost_usd, markup_rule,
        catalog_version, charged, cache_hit, stream, created_at, byok)
    VALUES (p_call_id, p_account_id, p_api_key_hash, p_user_id, p_team_id, p_end_user_id, p_model,
        p_provider, p_call_type, p_tokens_in, p_tokens_out, p_provider_cost_usd, p_markup_rule,
        p_catalog_version, p_micro, p_cache_hit, p_stream, p_now, p_byok)
    RETURNING id
)
SELECT u.id, (SELECT id FROM g)
    INTO v_event_id, v_grant_id
    FROM u;
IF v_grant_id IS NULL AND p_micro > 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'LC001',
        MESSAGE = 'no single grant covers the charge';
END IF;
RETURN QUERY SELECT v_balance, v_held, v_taken, v_escrow_reference, v_event_id, v_grant_id;
END;
$function$;
"""

DROP_FUNCTIONS = (
    "DROP FUNCTION IF EXISTS credits_settle_v1",
    "DROP FUNCTION IF EXISTS credits_settle_escrowed_v1",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE_FUNCTIONS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for drop in DROP_FUNCTIONS:
            op.execute(drop)

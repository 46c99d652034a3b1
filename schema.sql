-- litellm-credits ledger schema for PostgreSQL.
-- Generated from the SQLAlchemy models by `python -m ledger.schema_sql`; do not edit.
-- Live databases are better managed with the migrations: `ledger.migrate.upgrade(url)`.

CREATE TABLE accounts (
	id BIGSERIAL NOT NULL,
	kind VARCHAR(16) NOT NULL,
	external_id VARCHAR(255) NOT NULL,
	tier VARCHAR(64) NOT NULL,
	status VARCHAR(16) NOT NULL,
	overdraft_limit BIGINT NOT NULL,
	balance BIGINT NOT NULL,
	held BIGINT NOT NULL,
	debt BIGINT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	period_anchor TIMESTAMP WITH TIME ZONE NOT NULL,
	byok BOOLEAN NOT NULL,
	pending_tier VARCHAR(64),
	pending_tier_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_accounts PRIMARY KEY (id),
	CONSTRAINT uq_accounts_kind_external_id UNIQUE (kind, external_id),
	CONSTRAINT ck_accounts_kind CHECK (kind IN ('team', 'user', 'end_user', 'key')),
	CONSTRAINT ck_accounts_status CHECK (status IN ('active', 'suspended', 'past_due', 'closed')),
	CONSTRAINT ck_accounts_overdraft_limit CHECK (overdraft_limit >= 0),
	CONSTRAINT ck_accounts_held CHECK (held >= 0),
	CONSTRAINT ck_accounts_debt CHECK (debt >= 0)
);

CREATE INDEX ix_accounts_pending_tier_at ON accounts (pending_tier_at);

CREATE TABLE catalog_revision (
	id INTEGER NOT NULL,
	revision BIGINT NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_by VARCHAR(255) NOT NULL,
	CONSTRAINT pk_catalog_revision PRIMARY KEY (id),
	CONSTRAINT ck_catalog_revision_single_row CHECK (id = 1)
);

CREATE TABLE job_leases (
	name VARCHAR(128) NOT NULL,
	holder VARCHAR(64) NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	acquired_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_job_leases PRIMARY KEY (name)
);

CREATE TABLE pricing_rules (
	id VARCHAR(128) NOT NULL,
	data TEXT NOT NULL,
	priority INTEGER NOT NULL,
	active BOOLEAN NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_by VARCHAR(255) NOT NULL,
	CONSTRAINT pk_pricing_rules PRIMARY KEY (id)
);

CREATE TABLE tiers (
	code VARCHAR(64) NOT NULL,
	name VARCHAR(255) NOT NULL,
	data TEXT NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_by VARCHAR(255) NOT NULL,
	CONSTRAINT pk_tiers PRIMARY KEY (code)
);

CREATE TABLE api_keys (
	id BIGSERIAL NOT NULL,
	key_hash VARCHAR(64) NOT NULL,
	key_prefix VARCHAR(16) NOT NULL,
	account_id BIGINT NOT NULL,
	user_id VARCHAR(255),
	team_id VARCHAR(255),
	alias VARCHAR(255),
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	revoked_at TIMESTAMP WITH TIME ZONE,
	byok BOOLEAN NOT NULL,
	CONSTRAINT pk_api_keys PRIMARY KEY (id),
	CONSTRAINT uq_api_keys_key_hash UNIQUE (key_hash),
	CONSTRAINT fk_api_keys_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_api_keys_account_id ON api_keys (account_id);

CREATE TABLE grants (
	id BIGSERIAL NOT NULL,
	account_id BIGINT NOT NULL,
	source VARCHAR(64) NOT NULL,
	amount BIGINT NOT NULL,
	remaining BIGINT NOT NULL,
	priority INTEGER NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE,
	external_ref VARCHAR(255),
	reason TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_grants PRIMARY KEY (id),
	CONSTRAINT ck_grants_amount CHECK (amount > 0),
	CONSTRAINT ck_grants_remaining CHECK (remaining >= 0 AND remaining <= amount),
	CONSTRAINT ck_grants_source CHECK (source <> ''),
	CONSTRAINT fk_grants_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id),
	CONSTRAINT uq_grants_external_ref UNIQUE (external_ref)
);

CREATE INDEX ix_grants_account_id_priority_expires_at ON grants (account_id, priority, expires_at);

CREATE INDEX ix_grants_expires_at ON grants (expires_at);

CREATE TABLE holds (
	id VARCHAR(32) NOT NULL,
	account_id BIGINT NOT NULL,
	amount BIGINT NOT NULL,
	status VARCHAR(16) NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	reference VARCHAR(255) NOT NULL,
	charged BIGINT,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	resolved_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_holds PRIMARY KEY (id),
	CONSTRAINT ck_holds_status CHECK (status IN ('open', 'settled', 'voided', 'expired')),
	CONSTRAINT ck_holds_amount CHECK (amount >= 0),
	CONSTRAINT fk_holds_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_holds_account_id_status ON holds (account_id, status);

CREATE INDEX ix_holds_status_expires_at ON holds (status, expires_at);

CREATE TABLE quota_counters (
	id BIGSERIAL NOT NULL,
	account_id BIGINT NOT NULL,
	scope VARCHAR(255) NOT NULL,
	window_start TIMESTAMP WITH TIME ZONE NOT NULL,
	count INTEGER NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_quota_counters PRIMARY KEY (id),
	CONSTRAINT uq_quota_counters_account_id_scope_window_start UNIQUE (account_id, scope, window_start),
	CONSTRAINT ck_quota_counters_count CHECK (count >= 0),
	CONSTRAINT fk_quota_counters_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_quota_counters_window_start ON quota_counters (window_start);

CREATE TABLE tier_model_access (
	id BIGSERIAL NOT NULL,
	tier_code VARCHAR(64) NOT NULL,
	position INTEGER NOT NULL,
	pattern VARCHAR(255) NOT NULL,
	effect VARCHAR(8) NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_by VARCHAR(255) NOT NULL,
	CONSTRAINT pk_tier_model_access PRIMARY KEY (id),
	CONSTRAINT ck_tier_model_access_effect CHECK (effect IN ('allow', 'deny')),
	CONSTRAINT fk_tier_model_access_tier_code_tiers FOREIGN KEY(tier_code) REFERENCES tiers (code)
);

CREATE INDEX ix_tier_model_access_tier_code_position ON tier_model_access (tier_code, position);

CREATE TABLE entries (
	id BIGSERIAL NOT NULL,
	account_id BIGINT NOT NULL,
	kind VARCHAR(16) NOT NULL,
	amount BIGINT NOT NULL,
	held_delta BIGINT NOT NULL,
	grant_id BIGINT,
	hold_id VARCHAR(32),
	reason TEXT NOT NULL,
	reference VARCHAR(255) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_entries PRIMARY KEY (id),
	CONSTRAINT ck_entries_kind CHECK (kind IN ('grant', 'hold', 'release', 'charge', 'expire', 'refund', 'transfer', 'adjustment')),
	CONSTRAINT fk_entries_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id),
	CONSTRAINT fk_entries_grant_id_grants FOREIGN KEY(grant_id) REFERENCES grants (id),
	CONSTRAINT fk_entries_hold_id_holds FOREIGN KEY(hold_id) REFERENCES holds (id)
);

CREATE INDEX ix_entries_account_id_id ON entries (account_id, id);

CREATE TABLE usage_events (
	id BIGSERIAL NOT NULL,
	hold_id VARCHAR(32) NOT NULL,
	account_id BIGINT NOT NULL,
	api_key_hash VARCHAR(64),
	user_id VARCHAR(255),
	team_id VARCHAR(255),
	end_user_id VARCHAR(255),
	model VARCHAR(255) NOT NULL,
	provider VARCHAR(64) NOT NULL,
	call_type VARCHAR(64) NOT NULL,
	tokens_in BIGINT NOT NULL,
	tokens_out BIGINT NOT NULL,
	provider_cost_usd NUMERIC(20, 12) NOT NULL,
	markup_rule VARCHAR(255),
	catalog_version VARCHAR(64),
	charged BIGINT NOT NULL,
	cache_hit BOOLEAN NOT NULL,
	stream BOOLEAN NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	byok BOOLEAN NOT NULL,
	CONSTRAINT pk_usage_events PRIMARY KEY (id),
	CONSTRAINT ck_usage_events_charged CHECK (charged >= 0),
	CONSTRAINT uq_usage_events_hold_id UNIQUE (hold_id),
	CONSTRAINT fk_usage_events_hold_id_holds FOREIGN KEY(hold_id) REFERENCES holds (id),
	CONSTRAINT fk_usage_events_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_usage_events_account_id_created_at ON usage_events (account_id, created_at);

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

CREATE OR REPLACE FUNCTION credits_settle_batch_v1(
    p_charges jsonb,
    p_reasons jsonb,
    p_now timestamptz
)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE AS $function$
DECLARE
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
    v_grant_account bigint[] := '{}';
    v_grant_id bigint[] := '{}';
BEGIN
-- 1. lock the open escrows the lent calls borrowed from, in id order
PERFORM 1 FROM holds
WHERE id IN (SELECT b.escrow_id FROM (
        SELECT c->>'hold_id' AS id, CAST(c->>'micro' AS bigint) AS micro,
            CAST(c->>'account_id' AS bigint) AS account_id, c->>'escrow_hold_id' AS escrow_id,
            c->'usage' AS usage, n
        FROM jsonb_array_elements(p_charges) WITH ORDINALITY AS t(c, n)) b WHERE b.escrow_id IS NOT NULL AND b.account_id IS NOT NULL)
    AND status = 'open'
ORDER BY id FOR NO KEY UPDATE;
-- 2. close the open holds of the held calls: the exactly-once check
WITH firsts AS (
    SELECT DISTINCT ON (b.id) b.id, b.micro FROM (
        SELECT c->>'hold_id' AS id, CAST(c->>'micro' AS bigint) AS micro,
            CAST(c->>'account_id' AS bigint) AS account_id, c->>'escrow_hold_id' AS escrow_id,
            c->'usage' AS usage, n
        FROM jsonb_array_elements(p_charges) WITH ORDINALITY AS t(c, n)) b
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
    SELECT DISTINCT ON (b.id) b.id, b.account_id, b.micro, b.n FROM (
        SELECT c->>'hold_id' AS id, CAST(c->>'micro' AS bigint) AS micro,
            CAST(c->>'account_id' AS bigint) AS account_id, c->>'escrow_hold_id' AS escrow_id,
            c->'usage' AS usage, n
        FROM jsonb_array_elements(p_charges) WITH ORDINALITY AS t(c, n)) b
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
WITH b AS (
        SELECT c->>'hold_id' AS id, CAST(c->>'micro' AS bigint) AS micro,
            CAST(c->>'account_id' AS bigint) AS account_id, c->>'escrow_hold_id' AS escrow_id,
            c->'usage' AS usage, n
        FROM jsonb_array_elements(p_charges) WITH ORDINALITY AS t(c, n)
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
    RETURN QUERY SELECT DISTINCT b.id FROM (
        SELECT c->>'hold_id' AS id, CAST(c->>'micro' AS bigint) AS micro,
            CAST(c->>'account_id' AS bigint) AS account_id, c->>'escrow_hold_id' AS escrow_id,
            c->'usage' AS usage, n
        FROM jsonb_array_elements(p_charges) WITH ORDINALITY AS t(c, n)) b;
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
        WHERE id = (
    SELECT id FROM grants
    WHERE account_id = v_account.account_id AND remaining > 0 AND (expires_at IS NULL OR expires_at > p_now)
    ORDER BY priority DESC, expires_at ASC NULLS LAST, created_at ASC, id ASC
    LIMIT 1) AND remaining >= v_account.total
        RETURNING id INTO v_grant;
        IF v_grant IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'LC001',
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
INSERT INTO usage_events (hold_id, account_id, api_key_hash, user_id, team_id, end_user_id, model, provider, call_type, markup_rule, catalog_version, tokens_in, tokens_out, provider_cost_usd, cache_hit, stream, byok, charged, created_at)
SELECT r.id, r.account_id, u.api_key_hash, u.user_id, u.team_id, u.end_user_id, u.model, u.provider, u.call_type, u.markup_rule, u.catalog_version, u.tokens_in, u.tokens_out, u.provider_cost_usd, u.cache_hit, u.stream, u.byok, r.micro, p_now
FROM unnest(v_id, v_account_id, v_micro, v_usage) WITH ORDINALITY AS r(id, account_id, micro, usage, o),
    jsonb_to_record(r.usage) AS u(api_key_hash text, user_id text, team_id text, end_user_id text, model text, provider text, call_type text, markup_rule text, catalog_version text, tokens_in bigint, tokens_out bigint, provider_cost_usd numeric, cache_hit boolean, stream boolean, byok boolean)
ORDER BY r.o;
-- the batch's hold ids not charged now, for the one-by-one paths
RETURN QUERY SELECT DISTINCT b.id FROM (
        SELECT c->>'hold_id' AS id, CAST(c->>'micro' AS bigint) AS micro,
            CAST(c->>'account_id' AS bigint) AS account_id, c->>'escrow_hold_id' AS escrow_id,
            c->'usage' AS usage, n
        FROM jsonb_array_elements(p_charges) WITH ORDINALITY AS t(c, n)) b WHERE b.id <> ALL(v_id);
END;
$function$;

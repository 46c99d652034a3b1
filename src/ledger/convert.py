"""ORM row → domain dataclass. The only place that knows both shapes."""

from __future__ import annotations

from .tables import AccountRow, ApiKeyRow, EntryRow, GrantRow, HoldRow, UsageEventRow
from .types import Account, ApiKey, Entry, Grant, Hold, Settlement, UsageEvent


def account(row: AccountRow) -> Account:
    return Account(
        id=row.id,
        kind=row.kind,
        external_id=row.external_id,
        tier=row.tier,
        status=row.status,
        overdraft_limit=row.overdraft_limit,
        balance=row.balance,
        held=row.held,
        debt=row.debt,
        created_at=row.created_at,
        updated_at=row.updated_at,
        period_anchor=row.period_anchor,
        byok=row.byok,
        pending_tier=row.pending_tier,
        pending_tier_at=row.pending_tier_at,
    )


def api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        key_hash=row.key_hash,
        key_prefix=row.key_prefix,
        account_id=row.account_id,
        user_id=row.user_id,
        team_id=row.team_id,
        alias=row.alias,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        byok=row.byok,
    )


def grant(row: GrantRow) -> Grant:
    return Grant(
        id=row.id,
        account_id=row.account_id,
        source=row.source,
        amount=row.amount,
        remaining=row.remaining,
        priority=row.priority,
        expires_at=row.expires_at,
        external_ref=row.external_ref,
        reason=row.reason,
        created_at=row.created_at,
    )


def hold(row: HoldRow) -> Hold:
    return Hold(
        id=row.id,
        account_id=row.account_id,
        amount=row.amount,
        status=row.status,
        expires_at=row.expires_at,
        reference=row.reference,
        charged=row.charged,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


def entry(row: EntryRow) -> Entry:
    return Entry(
        id=row.id,
        account_id=row.account_id,
        kind=row.kind,
        amount=row.amount,
        held_delta=row.held_delta,
        grant_id=row.grant_id,
        hold_id=row.hold_id,
        reason=row.reason,
        reference=row.reference,
        created_at=row.created_at,
    )


def usage_event(row: UsageEventRow) -> UsageEvent:
    return UsageEvent(
        id=row.id,
        hold_id=row.hold_id,
        account_id=row.account_id,
        api_key_hash=row.api_key_hash,
        user_id=row.user_id,
        team_id=row.team_id,
        end_user_id=row.end_user_id,
        model=row.model,
        provider=row.provider,
        call_type=row.call_type,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        provider_cost_usd=row.provider_cost_usd,
        markup_rule=row.markup_rule,
        catalog_version=row.catalog_version,
        charged=row.charged,
        cache_hit=row.cache_hit,
        stream=row.stream,
        created_at=row.created_at,
        byok=row.byok,
    )


def settlement(hold_row: HoldRow, event: UsageEventRow, account_row: AccountRow | None = None) -> Settlement:
    """The Settlement of a settled hold; ``account_row`` supplies the ``*_after`` figures."""
    balance = account_row.balance if account_row is not None else 0
    held = account_row.held if account_row is not None else 0
    return Settlement(
        hold_id=hold_row.id,
        account_id=hold_row.account_id,
        held=hold_row.amount,
        charged=event.charged,
        usage_event_id=event.id,
        late=hold_row.status != "settled",
        settled_at=event.created_at,
        balance_after=balance,
        available_after=balance - held,
    )

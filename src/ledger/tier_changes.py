"""Tier changes: now (with an optional prorated grant, in the same transaction) or scheduled."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import grants
from .tables import AccountRow

PRORATION_SOURCE = "proration"


def change(
    session: Session,
    account: AccountRow,
    new_tier: str,
    *,
    prorated_micro: int,
    reference: str,
    reason: str,
    now: datetime,
) -> AccountRow:
    """Set the tier and grant the proration; the caller holds the account lock.

    With a proration the grant's unique reference makes a repeat a no-op: the tier is
    not set again, so a late retry cannot undo a change made since.
    """
    if prorated_micro > 0:
        found = grants.by_ref(session, reference)
        if found is not None:
            grants.check_same_account(found, account.id)
            return account
        grants.add(
            session,
            account,
            prorated_micro,
            source=PRORATION_SOURCE,
            external_ref=reference,
            priority=0,
            expires_at=None,
            reason=reason or f"proration for the change to tier {new_tier}",
            entry_kind="grant",
            now=now,
        )
    account.tier = new_tier
    # A change made now replaces whatever change was scheduled for later.
    account.pending_tier = None
    account.pending_tier_at = None
    account.updated_at = now
    session.flush()
    return account


def schedule(
    session: Session, account: AccountRow, new_tier: str | None, effective_at: datetime | None
) -> None:
    account.pending_tier = new_tier
    account.pending_tier_at = effective_at
    session.flush()


def due_ids(session: Session, now: datetime, limit: int) -> list[int]:
    stmt = (
        select(AccountRow.id)
        .where(AccountRow.pending_tier.is_not(None), AccountRow.pending_tier_at <= now)
        .order_by(AccountRow.pending_tier_at, AccountRow.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def apply_due(session: Session, account: AccountRow, now: datetime) -> bool:
    """Apply the account's scheduled change if it is (still) due; the caller holds the lock."""
    if account.pending_tier is None or account.pending_tier_at is None or account.pending_tier_at > now:
        return False
    account.tier = account.pending_tier
    account.pending_tier = None
    account.pending_tier_at = None
    account.updated_at = now
    session.flush()
    return True

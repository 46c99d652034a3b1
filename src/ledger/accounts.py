"""Accounts: get-or-create, lookups, tier and status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pricing.errors import AccountNotFound, InvalidOperation

from .tables import AccountRow
from .types import ACCOUNT_KINDS, ACCOUNT_STATUSES


def check_kind(kind: str) -> None:
    if kind not in ACCOUNT_KINDS:
        raise InvalidOperation(f"account kind {kind!r} is not one of {', '.join(ACCOUNT_KINDS)}")


def check_status(status: str) -> None:
    if status not in ACCOUNT_STATUSES:
        raise InvalidOperation(f"account status {status!r} is not one of {', '.join(ACCOUNT_STATUSES)}")


def find(session: Session, kind: str, external_id: str) -> AccountRow | None:
    stmt = select(AccountRow).where(AccountRow.kind == kind, AccountRow.external_id == external_id)
    return session.scalars(stmt).one_or_none()


def get(session: Session, account_id: int) -> AccountRow:
    row = session.get(AccountRow, account_id)
    if row is None:
        raise AccountNotFound(str(account_id))
    return row


def lock(session: Session, account_id: int) -> AccountRow:
    """The account row, locked until commit (a no-op on SQLite, serialized by BEGIN IMMEDIATE).

    Every operation that changes balances takes this lock before touching the
    account's grants, so locks are always taken hold → account → grants and
    concurrent operations cannot deadlock.
    """
    # FOR NO KEY UPDATE on PostgreSQL: the id never changes, so inserts elsewhere that
    # only check the foreign key (a new API key, say) need not wait for this lock.
    stmt = select(AccountRow).where(AccountRow.id == account_id).with_for_update(key_share=True)
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise AccountNotFound(str(account_id))
    return row


def create(
    session: Session,
    kind: str,
    external_id: str,
    *,
    tier: str,
    overdraft_limit: int,
    now: datetime,
    period_anchor: datetime | None = None,
    byok: bool = False,
) -> AccountRow:
    row = AccountRow(
        kind=kind,
        external_id=external_id,
        tier=tier,
        status="active",
        overdraft_limit=overdraft_limit,
        balance=0,
        held=0,
        debt=0,
        created_at=now,
        updated_at=now,
        period_anchor=period_anchor or now,
        byok=byok,
        pending_tier=None,
        pending_tier_at=None,
    )
    session.add(row)
    session.flush()
    return row

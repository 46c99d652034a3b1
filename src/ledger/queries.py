"""Read-only queries: balance, history, usage."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import accounts, convert
from .tables import EntryRow, GrantRow, UsageEventRow
from .types import Balance, Entry, Grant, UsageEvent


def balance(session: Session, account_id: int) -> Balance:
    row = accounts.get(session, account_id)
    return Balance(
        account_id=row.id,
        balance=row.balance,
        held=row.held,
        available=row.balance - row.held,
        overdraft_limit=row.overdraft_limit,
        debt=row.debt,
    )


def history(session: Session, account_id: int, limit: int) -> list[Entry]:
    accounts.get(session, account_id)
    stmt = select(EntryRow).where(EntryRow.account_id == account_id).order_by(EntryRow.id.desc()).limit(limit)
    return [convert.entry(row) for row in session.scalars(stmt)]


def usage(session: Session, account_id: int, limit: int) -> list[UsageEvent]:
    accounts.get(session, account_id)
    stmt = (
        select(UsageEventRow)
        .where(UsageEventRow.account_id == account_id)
        .order_by(UsageEventRow.created_at.desc(), UsageEventRow.id.desc())
        .limit(limit)
    )
    return [convert.usage_event(row) for row in session.scalars(stmt)]


def grants(session: Session, account_id: int, *, live_only: bool) -> list[Grant]:
    accounts.get(session, account_id)
    stmt = select(GrantRow).where(GrantRow.account_id == account_id)
    if live_only:
        stmt = stmt.where(GrantRow.remaining > 0)
    stmt = stmt.order_by(
        GrantRow.priority.desc(), GrantRow.expires_at.asc().nulls_last(), GrantRow.created_at, GrantRow.id
    )
    return [convert.grant(row) for row in session.scalars(stmt)]

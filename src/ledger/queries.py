"""Read-only queries: balance, history, usage, account pages, period totals."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from . import accounts, convert
from .escrow_sql import ESCROW_REFERENCE
from .tables import AccountRow, EntryRow, GrantRow, HoldRow, UsageEventRow
from .types import Account, Balance, Entry, Grant, UsageEvent, UsageTotals


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


def escrowed(session: Session, account_id: int) -> int:
    """µcr the account's open escrows hold (lent to calls or not: the ledger cannot tell)."""
    accounts.get(session, account_id)
    stmt = select(func.coalesce(func.sum(HoldRow.amount), 0)).where(
        HoldRow.account_id == account_id, HoldRow.status == "open", HoldRow.reference == ESCROW_REFERENCE
    )
    return int(session.scalar(stmt) or 0)


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


def list_accounts(session: Session, *, status: str | None, after_id: int, limit: int) -> list[Account]:
    stmt = select(AccountRow).where(AccountRow.id > after_id)
    if status is not None:
        stmt = stmt.where(AccountRow.status == status)
    return [convert.account(row) for row in session.scalars(stmt.order_by(AccountRow.id).limit(limit))]


def usage_totals(session: Session, account_id: int, since: datetime, until: datetime | None) -> UsageTotals:
    accounts.get(session, account_id)
    where = [UsageEventRow.account_id == account_id, UsageEventRow.created_at >= since]
    if until is not None:
        where.append(UsageEventRow.created_at < until)
    if session.get_bind().dialect.name == "postgresql":
        # NUMERIC sums exactly in the database.
        cost, byok_cost, charged, calls = session.execute(
            select(
                func.coalesce(func.sum(UsageEventRow.provider_cost_usd), 0),
                func.coalesce(
                    func.sum(case((UsageEventRow.byok, UsageEventRow.provider_cost_usd), else_=0)), 0
                ),
                func.coalesce(func.sum(UsageEventRow.charged), 0),
                func.count(),
            ).where(*where)
        ).one()
        return UsageTotals(
            provider_cost_usd=Decimal(cost),
            byok_provider_cost_usd=Decimal(byok_cost),
            charged=int(charged),
            calls=int(calls),
        )
    # SQLite keeps USD as text (its NUMERIC is a float): add them up here, as Decimals.
    rows = select(UsageEventRow.provider_cost_usd, UsageEventRow.byok, UsageEventRow.charged).where(*where)
    total = byok_total = Decimal(0)
    charged_total = calls_total = 0
    for usd, byok, charged_one in session.execute(rows):
        total += usd
        if byok:
            byok_total += usd
        charged_total += charged_one
        calls_total += 1
    return UsageTotals(
        provider_cost_usd=total, byok_provider_cost_usd=byok_total, charged=charged_total, calls=calls_total
    )

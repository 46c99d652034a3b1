"""Grants: adding credit (paying debt first), burning it down, expiring it.

Callers hold the account row lock (``accounts.lock``) before calling in here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pricing.errors import InvalidOperation

from .tables import AccountRow, EntryRow, GrantRow


def by_ref(session: Session, external_ref: str) -> GrantRow | None:
    return session.scalars(select(GrantRow).where(GrantRow.external_ref == external_ref)).one_or_none()


def check_same_account(row: GrantRow, account_id: int) -> GrantRow:
    if row.account_id != account_id:
        raise InvalidOperation(
            f"external reference {row.external_ref!r} already granted to account {row.account_id}, "
            f"not {account_id}"
        )
    return row


def add(
    session: Session,
    account: AccountRow,
    amount: int,
    *,
    source: str,
    external_ref: str | None,
    priority: int,
    expires_at: datetime | None,
    reason: str,
    entry_kind: str,
    now: datetime,
) -> GrantRow:
    """Insert a grant; the part of it that pays the account's debt is used up at once."""
    if external_ref is not None:
        existing = by_ref(session, external_ref)
        if existing is not None:
            return check_same_account(existing, account.id)
    paid = min(account.debt, amount)
    row = GrantRow(
        account_id=account.id,
        source=source,
        amount=amount,
        remaining=amount - paid,
        priority=priority,
        expires_at=expires_at,
        external_ref=external_ref,
        reason=reason,
        created_at=now,
    )
    session.add(row)
    session.flush()
    account.debt -= paid
    account.balance += amount
    account.updated_at = now
    session.add(
        EntryRow(
            account_id=account.id,
            kind=entry_kind,
            amount=amount,
            held_delta=0,
            grant_id=row.id,
            reason=reason,
            reference=external_ref or "",
            created_at=now,
        )
    )
    session.flush()
    return row


def burn(
    session: Session,
    account: AccountRow,
    micro: int,
    *,
    entry_kind: str,
    hold_id: str | None,
    reference: str,
    reason: str,
    now: datetime,
) -> None:
    """Take ``micro`` from the account's live grants in burn-down order; the rest becomes debt."""
    if micro <= 0:
        return
    stmt = (
        select(GrantRow)
        .where(
            GrantRow.account_id == account.id,
            GrantRow.remaining > 0,
            # A grant past its expiry is spent by nobody, even before the sweeper runs.
            or_(GrantRow.expires_at.is_(None), GrantRow.expires_at > now),
        )
        .order_by(
            GrantRow.priority.desc(),
            GrantRow.expires_at.asc().nulls_last(),
            GrantRow.created_at.asc(),
            GrantRow.id.asc(),
        )
        .with_for_update()
    )
    left = micro
    for grant in session.scalars(stmt):
        if left == 0:
            break
        take = min(left, grant.remaining)
        grant.remaining -= take
        left -= take
        session.add(
            EntryRow(
                account_id=account.id,
                kind=entry_kind,
                amount=-take,
                held_delta=0,
                grant_id=grant.id,
                hold_id=hold_id,
                reason=reason,
                reference=reference,
                created_at=now,
            )
        )
    if left > 0:
        account.debt += left
        session.add(
            EntryRow(
                account_id=account.id,
                kind=entry_kind,
                amount=-left,
                held_delta=0,
                grant_id=None,
                hold_id=hold_id,
                reason=f"{reason} (not covered by any grant: debt)".strip(),
                reference=reference,
                created_at=now,
            )
        )
    account.balance -= micro
    account.updated_at = now
    session.flush()


def expire(
    session: Session,
    account: AccountRow,
    grant: GrantRow,
    now: datetime,
    *,
    reference: str | None = None,
    reason: str | None = None,
) -> int:
    """Write off what is left of an expired grant; returns the µcr written off.

    The entry's reference is the grant's own unless the caller names what expired it
    (a period allocation does, so its result can be read back).
    """
    left = grant.remaining
    if left <= 0:
        return 0
    grant.remaining = 0
    account.balance -= left
    account.updated_at = now
    session.add(
        EntryRow(
            account_id=account.id,
            kind="expire",
            amount=-left,
            held_delta=0,
            grant_id=grant.id,
            reason=reason or f"{grant.source} grant expired",
            reference=(grant.external_ref or "") if reference is None else reference,
            created_at=now,
        )
    )
    session.flush()
    return left

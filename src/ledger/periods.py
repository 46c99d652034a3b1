"""Billing periods: the subscription allocation of a period, rollover, and expiry of the last one.

One transaction per period and account, keyed by the allocation's external reference
``alloc:{account_id}:{period_start}``: the unique constraint on grants makes a repeat
(another replica, a retried job) find the first result instead of granting twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import grants
from .tables import AccountRow, EntryRow, GrantRow
from .types import PeriodResult

ALLOCATION_SOURCE = "subscription"
ROLLOVER_SOURCE = "rollover"


def period_key(account_id: int, period_start: datetime) -> str:
    # UTC, so one instant gives one key whatever offset the caller's datetime carries.
    return f"{account_id}:{period_start.astimezone(UTC).isoformat()}"


def allocation_ref(account_id: int, period_start: datetime) -> str:
    return f"alloc:{period_key(account_id, period_start)}"


def rollover_ref(account_id: int, period_start: datetime) -> str:
    return f"rollover:{period_key(account_id, period_start)}"


def rollover_amount(unused: int, fraction: Decimal | None, cap: int | None) -> int:
    if fraction is None or unused <= 0:
        return 0
    carried = int((Decimal(unused) * fraction).to_integral_value(rounding=ROUND_FLOOR))
    return max(0, carried if cap is None else min(carried, cap))


def _expired_by_sweeper(session: Session, grant: GrantRow) -> tuple[int, bool]:
    """(µcr the expiry sweeper already wrote off, whether an earlier allocation handled it).

    The sweeper's expire entry carries the grant's own reference; an allocation's
    carries the reference of the allocation that expired it.
    """
    swept = 0
    handled = False
    for reference, amount in session.execute(
        select(EntryRow.reference, EntryRow.amount).where(
            EntryRow.grant_id == grant.id, EntryRow.kind == "expire"
        )
    ):
        if reference != grant.external_ref and reference.startswith("alloc:"):
            handled = True
        swept += -amount
    return swept, handled


def _previous_allocations(
    session: Session, account_id: int, period_start: datetime, period_end: datetime
) -> list[GrantRow]:
    # The last period's allocations end at (or, after a change of anchor, shortly before)
    # this period's start; looking back one period length keeps older ones out.
    stmt = (
        select(GrantRow)
        .where(
            GrantRow.account_id == account_id,
            GrantRow.source == ALLOCATION_SOURCE,
            GrantRow.expires_at <= period_start,
            GrantRow.expires_at > period_start - (period_end - period_start),
        )
        .order_by(GrantRow.id)
        .with_for_update()
    )
    return list(session.scalars(stmt))


def existing(session: Session, account_id: int, allocation: GrantRow, period_start: datetime) -> PeriodResult:
    rollover = grants.by_ref(session, rollover_ref(account_id, period_start))
    expired = session.scalar(
        select(func.coalesce(func.sum(EntryRow.amount), 0)).where(
            EntryRow.account_id == account_id,
            EntryRow.kind == "expire",
            EntryRow.reference == allocation_ref(account_id, period_start),
        )
    )
    return PeriodResult(
        granted=allocation.amount,
        rolled_over=rollover.amount if rollover is not None else 0,
        expired=-int(expired or 0),
        already_done=True,
    )


def allocate(
    session: Session,
    account: AccountRow,
    *,
    period_start: datetime,
    period_end: datetime,
    allocation_micro: int,
    rollover_fraction: Decimal | None,
    rollover_cap_micro: int | None,
    rollover_expires_at: datetime | None,
    now: datetime,
) -> PeriodResult:
    """Grant the period's allocation, carry over part of the last one, expire the rest.

    The caller holds the account lock. Unused credit of the last allocation is what it
    had left at its expiry: what is still there plus what the expiry sweeper already
    wrote off, so a sweeper that ran first does not cost the account its rollover.
    """
    alloc_ref = allocation_ref(account.id, period_start)
    found = grants.by_ref(session, alloc_ref)
    if found is not None:
        return existing(session, account.id, grants.check_same_account(found, account.id), period_start)

    unused = 0
    expired = 0
    for previous in _previous_allocations(session, account.id, period_start, period_end):
        swept, handled = _expired_by_sweeper(session, previous)
        if handled:
            continue
        unused += previous.remaining + swept
        expired += grants.expire(
            session, account, previous, now, reference=alloc_ref, reason="subscription period ended"
        )

    rolled = rollover_amount(unused, rollover_fraction, rollover_cap_micro)
    if rolled > 0:
        # Added before the allocation: with equal expiry, the older grant burns first.
        grants.add(
            session,
            account,
            rolled,
            source=ROLLOVER_SOURCE,
            external_ref=rollover_ref(account.id, period_start),
            priority=0,
            expires_at=rollover_expires_at or period_end,
            reason="unused subscription credit carried over",
            entry_kind="grant",
            now=now,
        )
    grants.add(
        session,
        account,
        allocation_micro,
        source=ALLOCATION_SOURCE,
        external_ref=alloc_ref,
        priority=0,
        expires_at=period_end,
        reason=f"subscription allocation for the period from {period_start.astimezone(UTC).date()}",
        entry_kind="grant",
        now=now,
    )
    return PeriodResult(granted=allocation_micro, rolled_over=rolled, expired=expired, already_done=False)

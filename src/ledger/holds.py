"""Holds: place (strict, by conditional UPDATE), settle exactly once, void, expire."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from pricing.errors import AccountInactive, AccountNotFound, HoldNotFound, InsufficientCredits

from . import accounts, convert, grants
from .ids import new_hold_id
from .tables import AccountRow, EntryRow, HoldRow, UsageEventRow
from .types import Settlement, UsageRecord, micro_to_credit_str


def place(
    session: Session,
    account_id: int,
    micro: int,
    *,
    ttl_seconds: float,
    reference: str,
    now: datetime,
) -> HoldRow:
    # One conditional UPDATE, no read before it: on PostgreSQL under READ COMMITTED a
    # concurrent writer's row lock makes this statement wait and then re-evaluate the
    # WHERE clause against the committed row, so two proxies cannot spend the same credit.
    stmt = (
        update(AccountRow)
        .where(
            AccountRow.id == account_id,
            AccountRow.status == "active",
            AccountRow.balance - AccountRow.held - micro >= -AccountRow.overdraft_limit,
        )
        .values(held=AccountRow.held + micro, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(stmt))
    if result.rowcount != 1:
        refuse(session, account_id, micro)
    row = HoldRow(
        id=new_hold_id(),
        account_id=account_id,
        amount=micro,
        status="open",
        expires_at=now + timedelta(seconds=ttl_seconds),
        reference=reference,
        created_at=now,
    )
    session.add(row)
    session.flush()
    session.add(
        EntryRow(
            account_id=account_id,
            kind="hold",
            amount=0,
            held_delta=micro,
            hold_id=row.id,
            reason="hold for the worst case of a call",
            reference=reference,
            created_at=now,
        )
    )
    session.flush()
    return row


def refuse(session: Session, account_id: int, micro: int) -> NoReturn:
    """Explain why the conditional UPDATE matched no row; always raises."""
    row = session.get(AccountRow, account_id)
    if row is None:
        raise AccountNotFound(str(account_id))
    label = f"{row.kind}:{row.external_id}"
    if row.status != "active":
        raise AccountInactive(label, row.status)
    spendable = row.balance - row.held + row.overdraft_limit
    raise InsufficientCredits(label, micro_to_credit_str(micro), micro_to_credit_str(max(spendable, 0)))


def lock(session: Session, hold_id: str) -> HoldRow:
    stmt = select(HoldRow).where(HoldRow.id == hold_id).with_for_update(key_share=True)
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise HoldNotFound(hold_id)
    return row


def release(
    session: Session, account: AccountRow, hold: HoldRow, *, status: str, reason: str, now: datetime
) -> None:
    """Close an open hold: its amount is no longer held."""
    account.held -= hold.amount
    account.updated_at = now
    hold.status = status
    hold.resolved_at = now
    session.add(
        EntryRow(
            account_id=account.id,
            kind="release",
            amount=0,
            held_delta=-hold.amount,
            hold_id=hold.id,
            reason=reason,
            reference=hold.reference,
            created_at=now,
        )
    )
    session.flush()


def existing_settlement(session: Session, hold_id: str) -> Settlement | None:
    event = session.scalars(select(UsageEventRow).where(UsageEventRow.hold_id == hold_id)).one_or_none()
    if event is None:
        return None
    hold = session.get(HoldRow, hold_id)
    assert hold is not None, "usage event without its hold: the foreign key forbids it"
    return convert.settlement(hold, event, session.get(AccountRow, hold.account_id))


def settle(session: Session, hold_id: str, micro: int, usage: UsageRecord, now: datetime) -> Settlement:
    hold = lock(session, hold_id)
    done = existing_settlement(session, hold_id)
    if done is not None:
        return done
    account = accounts.lock(session, hold.account_id)
    if hold.status == "open":
        release(session, account, hold, status="settled", reason="settled", now=now)
    # Otherwise the sweeper or a failure event voided the hold while the call was being
    # served: the call happened, so it is charged all the same, without a second release.
    grants.burn(
        session,
        account,
        micro,
        entry_kind="charge",
        hold_id=hold.id,
        reference=hold.reference,
        reason=f"call {usage.model}".strip(),
        now=now,
    )
    hold.charged = micro
    event = UsageEventRow(
        hold_id=hold.id,
        account_id=hold.account_id,
        api_key_hash=usage.api_key_hash,
        user_id=usage.user_id,
        team_id=usage.team_id,
        end_user_id=usage.end_user_id,
        model=usage.model,
        provider=usage.provider,
        call_type=usage.call_type,
        tokens_in=usage.tokens_in,
        tokens_out=usage.tokens_out,
        provider_cost_usd=usage.provider_cost_usd,
        markup_rule=usage.markup_rule,
        catalog_version=usage.catalog_version,
        charged=micro,
        cache_hit=usage.cache_hit,
        stream=usage.stream,
        created_at=now,
        byok=usage.byok,
    )
    session.add(event)
    # The unique hold_id makes a concurrent duplicate fail here with IntegrityError.
    session.flush()
    return convert.settlement(hold, event, account)


def void(session: Session, hold_id: str, *, status: str, reason: str, now: datetime) -> bool:
    hold = lock(session, hold_id)
    if hold.status != "open":
        return False
    if status == "expired" and hold.expires_at > now:
        return False
    account = accounts.lock(session, hold.account_id)
    release(session, account, hold, status=status, reason=reason, now=now)
    return True


def stale_ids(session: Session, now: datetime, limit: int) -> list[str]:
    stmt = (
        select(HoldRow.id)
        .where(HoldRow.status == "open", HoldRow.expires_at <= now)
        .order_by(HoldRow.expires_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))

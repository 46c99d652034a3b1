"""Quota counters: calls per account, scope and window, counted up to a limit by the database.

Each check is one upsert that increments the counter only while it is below the
limit (``ON CONFLICT ... DO UPDATE ... WHERE count < limit``): the row lock makes
concurrent proxies queue on it, and the WHERE is re-checked on the newest row, so
a limit of N lets exactly N calls through however many race.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from pricing.errors import InvalidOperation, QuotaExceeded

from .tables import QuotaCounterRow
from .types import QuotaLike
from .upsert import insert


def check_specs(checks: Sequence[QuotaLike]) -> None:
    for check in checks:
        if not check.scope or len(check.scope) > 255:
            raise InvalidOperation(f"a quota scope must be 1 to 255 characters, got {check.scope!r}")
        if check.window_start.tzinfo is None or check.window_end.tzinfo is None:
            raise InvalidOperation(f"quota {check.scope!r}: window bounds must be timezone-aware")
        if isinstance(check.limit, bool) or not isinstance(check.limit, int):
            raise InvalidOperation(
                f"quota {check.scope!r}: limit must be a whole number, got {check.limit!r}"
            )


def lock_order(checks: Sequence[QuotaLike]) -> list[QuotaLike]:
    """The checks in one fixed order, so two transactions never lock counters crosswise."""
    return sorted(checks, key=lambda c: (c.scope, c.window_start))


def consume(session: Session, account_id: int, checks: Sequence[QuotaLike], now: datetime) -> None:
    """Count one call against every check, or raise QuotaExceeded (the caller rolls back)."""
    for check in lock_order(checks):
        if check.limit <= 0:
            raise QuotaExceeded(check.what, check.limit, resets_at=check.window_end)
        stmt = (
            insert(session, QuotaCounterRow)
            .values(
                account_id=account_id,
                scope=check.scope,
                window_start=check.window_start,
                count=1,
                updated_at=now,
            )
            .on_conflict_do_update(
                index_elements=[
                    QuotaCounterRow.account_id,
                    QuotaCounterRow.scope,
                    QuotaCounterRow.window_start,
                ],
                set_={"count": QuotaCounterRow.count + 1, "updated_at": now},
                where=QuotaCounterRow.count < check.limit,
            )
            .returning(QuotaCounterRow.count)
        )
        if session.execute(stmt).scalar_one_or_none() is None:
            raise QuotaExceeded(check.what, check.limit, resets_at=check.window_end)


def release(session: Session, account_id: int, checks: Sequence[QuotaLike], now: datetime) -> None:
    """Give back one call on every check (never below zero)."""
    for check in lock_order(checks):
        session.execute(
            update(QuotaCounterRow)
            .where(
                QuotaCounterRow.account_id == account_id,
                QuotaCounterRow.scope == check.scope,
                QuotaCounterRow.window_start == check.window_start,
                QuotaCounterRow.count > 0,
            )
            .values(count=QuotaCounterRow.count - 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def counts(session: Session, account_id: int, checks: Sequence[QuotaLike]) -> list[int]:
    result: list[int] = []
    for check in checks:
        found = session.scalars(
            select(QuotaCounterRow.count).where(
                QuotaCounterRow.account_id == account_id,
                QuotaCounterRow.scope == check.scope,
                QuotaCounterRow.window_start == check.window_start,
            )
        ).one_or_none()
        result.append(found or 0)
    return result


def prune(session: Session, before: datetime) -> int:
    stmt = delete(QuotaCounterRow).where(QuotaCounterRow.window_start < before)
    return int(getattr(session.execute(stmt.execution_options(synchronize_session=False)), "rowcount", 0))

"""Quota windows: billing periods anchored to the account's own cycle, and UTC days.

A billing period starts on the anchor's day of the month at the anchor's time
of day (UTC) and lasts one calendar month. A day the month lacks is clamped to
the month's last day, without drifting: an anchor of Jan 31 gives periods
starting Feb 28 (29 in a leap year), Mar 31, Apr 30, May 31. Windows are
half-open, ``[start, end)``: a call at exactly a period's end is in the next.

This module says which counters a call must fit under (:class:`QuotaCheck`);
the ledger counts them, and whoever finds a count used up raises
:class:`~pricing.errors.QuotaExceeded` with ``resets_at=window_end``. Every
matching quota applies: the ledger keeps one counter per account, ``scope``
and ``window_start``, and each admitted call adds one to each of its checks.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pricing.catalog import Tier
from pricing.patterns import NO_GROUPS, matches


@dataclass(frozen=True)
class QuotaCheck:
    """One counter a call must fit under."""

    scope: str
    """``model:<pattern>:day``, ``model:<pattern>:month`` or ``calls:month``: the counter's key."""
    window_start: datetime
    window_end: datetime
    """Exclusive; when the counter resets (``QuotaExceeded.resets_at``)."""
    limit: int
    what: str
    """For the error message: ``calls to gpt-3.5-turbo per day``."""


def period_bounds(anchor: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The billing period ``[start, end)`` containing ``now``, for a cycle that began at ``anchor``.

    Both must be aware; the result is in UTC. ``now`` before ``anchor`` gets
    the period the same cycle would have had then.
    """
    anchor, now = _utc(anchor, "anchor"), _utc(now, "now")
    # Months from the anchor's month to now's; the period may have started a month earlier.
    months = (now.year - anchor.year) * 12 + (now.month - anchor.month)
    start = _nth_period_start(anchor, months)
    if start > now:
        months -= 1
        start = _nth_period_start(anchor, months)
    return start, _nth_period_start(anchor, months + 1)


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar day ``[midnight, next midnight)`` containing ``now``."""
    now = _utc(now, "now")
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def quota_checks(
    tier: Tier, model: str, *, anchor: datetime, now: datetime, groups: frozenset[str] = NO_GROUPS
) -> list[QuotaCheck]:
    """The counters a call to ``model`` on ``tier`` at ``now`` must fit under, in the tier's order."""
    checks: list[QuotaCheck] = []
    day: tuple[datetime, datetime] | None = None
    period: tuple[datetime, datetime] | None = None
    for quota in tier.quotas:
        if not matches(quota.model, model, groups):
            continue
        if quota.per_day is not None:
            day = day or day_bounds(now)
            checks.append(
                QuotaCheck(f"model:{quota.model}:day", *day, quota.per_day, f"calls to {quota.model} per day")
            )
        if quota.per_month is not None:
            period = period or period_bounds(anchor, now)
            checks.append(
                QuotaCheck(
                    f"model:{quota.model}:month",
                    *period,
                    quota.per_month,
                    f"calls to {quota.model} per billing period",
                )
            )
    if tier.monthly_api_calls is not None:
        period = period or period_bounds(anchor, now)
        checks.append(
            QuotaCheck("calls:month", *period, tier.monthly_api_calls, "API calls per billing period")
        )
    return checks


def _nth_period_start(anchor: datetime, months: int) -> datetime:
    # Always computed from the anchor, never from the previous period, so a
    # clamped Feb 28 does not turn every later period into the 28th.
    index = anchor.month - 1 + months
    year, month = anchor.year + index // 12, index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got {moment.isoformat()}")
    return moment.astimezone(UTC)

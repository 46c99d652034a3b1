"""Dynamic pricing applied after the base markup: time windows and volume discounts.

    time_windows:                  # a multiplier for calls made inside a local-time window
      - id: night                  # required, unique
        start: "22:00"             # local wall-clock time, quoted (YAML reads 22:00 as a number)
        end: "06:00"               # exclusive; may be earlier than start (wraps past midnight)
        timezone: Europe/Berlin    # required IANA zone; DST is handled by zoneinfo
        days: [mon, tue]           # optional; the day the window STARTS on; absent = every day
        multiplier: "0.8"          # > 0; 0.8 = 20% off, 1.5 = surge
        tiers: [pro]               # optional; absent = every tier
        models: ["gpt-4o*"]        # optional; absent = every model
        priority: 0                # the highest-priority matching window applies, then the earlier one

    volume_discounts:              # a discount once the period's provider spend reaches a level
      - id: vol-100
        min_period_spend_usd: "100"   # provider cost of the account's calls this billing period
        discount_percent: "10"        # 0 < p <= 100
        tiers: []                     # optional, as above
        models: []                    # optional, as above

Only one of each applies to a call: the first matching time window, and the
volume discount with the highest ``min_period_spend_usd`` the account has
reached. ``now`` and the period spend are passed in; nothing here reads a clock.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator

from pricing.fields import Code, Integer, ModelPattern, NonNegativeMoney, PositiveMoney
from pricing.patterns import NO_GROUPS, matches_any

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order

_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _parse_clock(value: object) -> object:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320.
        raise ValueError(f'write the time in quotes, e.g. "22:00" (YAML read it as the number {value})')
    if not isinstance(value, str) or not _CLOCK.fullmatch(value.strip()):
        raise ValueError(f'expected a time "HH:MM" (00:00 to 23:59), got {value!r}')
    hours, minutes = value.strip().split(":")
    return time(int(hours), int(minutes))


Clock = Annotated[time, BeforeValidator(_parse_clock)]


class _Selectors(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tiers: tuple[Code, ...] = ()
    models: tuple[ModelPattern, ...] = ()

    def selects(self, tier: str, model: str, groups: frozenset[str]) -> bool:
        if self.tiers and tier not in self.tiers:
            return False
        return not self.models or matches_any(self.models, model, groups)


class TimeWindow(_Selectors):
    id: Code
    start: Clock
    end: Clock
    timezone: str
    days: tuple[Day, ...] = ()
    multiplier: PositiveMoney
    priority: Integer = 0

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'"
            ) from None
        return name

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.start == self.end:
            raise ValueError(
                "start and end are equal; a window needs a length (omit the window to never apply)"
            )
        return self

    def contains(self, now: datetime) -> bool:
        """Whether the aware instant ``now`` falls in the window, in the window's own time zone."""
        local = _aware(now).astimezone(ZoneInfo(self.timezone))
        clock = local.time().replace(tzinfo=None)
        if self.start < self.end:
            if not self.start <= clock < self.end:
                return False
            started = local
        elif clock >= self.start:
            started = local
        elif clock < self.end:
            # After midnight in a window that wrapped: it started on the previous day.
            started = local - timedelta(days=1)
        else:
            return False
        return not self.days or DAYS[started.weekday()] in self.days


class VolumeDiscount(_Selectors):
    id: Code
    min_period_spend_usd: NonNegativeMoney
    discount_percent: PositiveMoney

    @field_validator("discount_percent")
    @classmethod
    def _at_most_100(cls, percent: Decimal) -> Decimal:
        if percent > 100:
            raise ValueError(f"a discount is at most 100 percent, got {percent}")
        return percent


def select_time_window(
    windows: tuple[TimeWindow, ...],
    *,
    now: datetime | None,
    tier: str,
    model: str,
    groups: frozenset[str] = NO_GROUPS,
) -> TimeWindow | None:
    """The window in force: the highest ``priority`` among those containing ``now``, then the earlier."""
    if now is None:
        return None
    best: TimeWindow | None = None
    for window in windows:
        if best is not None and window.priority <= best.priority:
            continue  # an equal or lower priority never displaces the earlier window
        if window.selects(tier, model, groups) and window.contains(now):
            best = window
    return best


def select_volume_discount(
    discounts: tuple[VolumeDiscount, ...],
    *,
    period_spend_usd: Decimal,
    tier: str,
    model: str,
    groups: frozenset[str] = NO_GROUPS,
) -> VolumeDiscount | None:
    """The highest level reached by ``period_spend_usd``; among equal levels the earlier entry."""
    best: VolumeDiscount | None = None
    for discount in discounts:
        if not discount.selects(tier, model, groups) or period_spend_usd < discount.min_period_spend_usd:
            continue
        if best is None or discount.min_period_spend_usd > best.min_period_spend_usd:
            best = discount
    return best


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected an aware datetime (with a time zone), got {moment.isoformat()}")
    return moment

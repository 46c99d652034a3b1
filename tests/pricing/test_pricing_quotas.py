from datetime import UTC, datetime, timedelta, timezone

import pytest

from pricing import QuotaCheck, QuotaExceeded, Tier, day_bounds, period_bounds, quota_checks


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- billing periods anchored to the account ---------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "now", "start", "end"),
    [
        # anchored on the 15th at 10:30, not on the calendar month
        (utc(2025, 1, 15, 10, 30), utc(2025, 3, 20), utc(2025, 3, 15, 10, 30), utc(2025, 4, 15, 10, 30)),
        (
            utc(2025, 1, 15, 10, 30),
            utc(2025, 3, 15, 10, 29),
            utc(2025, 2, 15, 10, 30),
            utc(2025, 3, 15, 10, 30),
        ),
        # anchor on the 31st: clamped to the month's end, never drifting to the 28th
        (utc(2025, 1, 31), utc(2025, 2, 10), utc(2025, 1, 31), utc(2025, 2, 28)),
        (utc(2025, 1, 31), utc(2025, 3, 1), utc(2025, 2, 28), utc(2025, 3, 31)),
        (utc(2025, 1, 31), utc(2025, 4, 15), utc(2025, 3, 31), utc(2025, 4, 30)),
        (utc(2025, 1, 31), utc(2025, 5, 30), utc(2025, 4, 30), utc(2025, 5, 31)),
        # leap year: Feb 29
        (utc(2024, 1, 31), utc(2024, 2, 29, 12), utc(2024, 2, 29), utc(2024, 3, 31)),
        (utc(2024, 2, 29), utc(2025, 2, 28, 1), utc(2025, 2, 28), utc(2025, 3, 29)),
        (utc(2024, 2, 29), utc(2025, 3, 29), utc(2025, 3, 29), utc(2025, 4, 29)),
        # across a year end
        (utc(2024, 11, 30), utc(2025, 1, 5), utc(2024, 12, 30), utc(2025, 1, 30)),
        # the anchor itself starts the first period
        (utc(2025, 6, 1), utc(2025, 6, 1), utc(2025, 6, 1), utc(2025, 7, 1)),
        # before the anchor: the period the cycle would have had
        (utc(2025, 6, 10), utc(2025, 5, 20), utc(2025, 5, 10), utc(2025, 6, 10)),
    ],
)
def test_period_bounds(anchor: datetime, now: datetime, start: datetime, end: datetime) -> None:
    assert period_bounds(anchor, now) == (start, end)


def test_a_call_at_exactly_the_period_end_belongs_to_the_next_period() -> None:
    anchor = utc(2025, 1, 31, 8)
    first_start, first_end = period_bounds(anchor, utc(2025, 2, 1))
    assert first_end == utc(2025, 2, 28, 8)
    assert period_bounds(anchor, first_end) == (utc(2025, 2, 28, 8), utc(2025, 3, 31, 8))
    assert period_bounds(anchor, first_end - timedelta(microseconds=1)) == (first_start, first_end)


def test_periods_chain_without_gaps_for_years() -> None:
    anchor = utc(2023, 8, 31, 23, 59, 59)
    start, end = period_bounds(anchor, anchor)
    for _ in range(40):
        next_start, next_end = period_bounds(anchor, end)
        assert next_start == end and next_end > next_start
        start, end = next_start, next_end
    assert start == utc(2026, 12, 31, 23, 59, 59)  # Aug 2023 + 40 months, still on the 31st


def test_period_bounds_are_utc_whatever_zone_comes_in() -> None:
    plus_two = timezone(timedelta(hours=2))
    anchor = datetime(2025, 3, 1, 1, 0, tzinfo=plus_two)  # = Feb 28 23:00 UTC
    start, end = period_bounds(anchor, datetime(2025, 3, 10, tzinfo=plus_two))
    assert start == utc(2025, 2, 28, 23) and start.tzinfo == UTC
    assert end == utc(2025, 3, 28, 23)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_bounds(datetime(2025, 1, 1), utc(2025, 1, 2))
    with pytest.raises(ValueError, match="aware"):
        day_bounds(datetime(2025, 1, 1))


def test_day_bounds_are_the_utc_calendar_day() -> None:
    assert day_bounds(utc(2025, 3, 9, 23, 59, 59)) == (utc(2025, 3, 9), utc(2025, 3, 10))
    assert day_bounds(utc(2025, 3, 10)) == (utc(2025, 3, 10), utc(2025, 3, 11))
    # 01:00 in UTC+2 is the previous UTC day
    early = datetime(2025, 3, 10, 1, tzinfo=timezone(timedelta(hours=2)))
    assert day_bounds(early) == (utc(2025, 3, 9), utc(2025, 3, 10))


# -- quota checks -------------------------------------------------------------------


def tier(**fields: object) -> Tier:
    return Tier.model_validate({"code": "free", "allowed_models": ["*"], **fields})


ANCHOR = utc(2025, 1, 31, 12)
NOW = utc(2025, 3, 5, 9, 30)


def test_quota_checks_for_a_model_with_daily_and_monthly_limits() -> None:
    plan = tier(
        quotas=[
            {"model": "gpt-3.5-turbo", "per_day": 100, "per_month": 2000},
            {"model": "gpt-4*", "per_day": 10},
        ],
        monthly_api_calls=1000,
    )
    checks = quota_checks(plan, "gpt-3.5-turbo", anchor=ANCHOR, now=NOW)
    assert checks == [
        QuotaCheck(
            "model:gpt-3.5-turbo:day", utc(2025, 3, 5), utc(2025, 3, 6), 100, "calls to gpt-3.5-turbo per day"
        ),
        QuotaCheck(
            "model:gpt-3.5-turbo:month",
            utc(2025, 2, 28, 12),
            utc(2025, 3, 31, 12),
            2000,
            "calls to gpt-3.5-turbo per billing period",
        ),
        QuotaCheck(
            "calls:month", utc(2025, 2, 28, 12), utc(2025, 3, 31, 12), 1000, "API calls per billing period"
        ),
    ]


def test_a_glob_quota_is_one_pool_with_the_pattern_as_scope() -> None:
    plan = tier(quotas=[{"model": "gpt-4*", "per_day": 10}])
    [for_4o] = quota_checks(plan, "gpt-4o", anchor=ANCHOR, now=NOW)
    [for_4] = quota_checks(plan, "gpt-4-turbo", anchor=ANCHOR, now=NOW)
    assert for_4o.scope == for_4.scope == "model:gpt-4*:day"
    assert quota_checks(plan, "claude-3", anchor=ANCHOR, now=NOW) == []


def test_every_matching_quota_applies_and_groups_match() -> None:
    plan = tier(
        quotas=[
            {"model": "gpt-4o", "per_day": 5},
            {"model": "gpt-*", "per_month": 50},
            {"model": "group:premium", "per_day": 7},
        ]
    )
    scopes = [check.scope for check in quota_checks(plan, "gpt-4o", anchor=ANCHOR, now=NOW)]
    assert scopes == ["model:gpt-4o:day", "model:gpt-*:month"]
    grouped = quota_checks(plan, "gpt-4o", anchor=ANCHOR, now=NOW, groups=frozenset({"premium"}))
    assert [check.scope for check in grouped] == [
        "model:gpt-4o:day",
        "model:gpt-*:month",
        "model:group:premium:day",
    ]


def test_no_quotas_no_checks() -> None:
    assert quota_checks(tier(), "anything", anchor=ANCHOR, now=NOW) == []


def test_the_window_end_is_when_the_quota_resets() -> None:
    [check] = quota_checks(tier(monthly_api_calls=3), "m", anchor=ANCHOR, now=NOW)
    error = QuotaExceeded(check.what, check.limit, resets_at=check.window_end)
    assert error.code == "quota_exceeded"
    assert "2025-03-31T12:00:00Z" in str(error)
    assert error.retry_after_seconds(now=utc(2025, 3, 31, 11, 59)) == 60


def test_a_quota_must_limit_something() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="per_day and/or per_month"):
        tier(quotas=[{"model": "m"}])
    with pytest.raises(ValidationError, match="must be > 0"):
        tier(quotas=[{"model": "m", "per_day": 0}])

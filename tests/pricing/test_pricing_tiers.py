import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pricing import (
    CatalogError,
    MaxTokensExceeded,
    ModelNotAllowed,
    Rollover,
    StripePriceIds,
    Tier,
    check_access,
    enforce_max_tokens,
    load_catalog,
    parse_catalog,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
D = Decimal


def tier(**fields: object) -> Tier:
    return Tier.model_validate({"code": "t", "allowed_models": ["*"], **fields})


# -- the example catalogs --------------------------------------------------------------


def test_example_tiers_carry_plans_and_limits() -> None:
    catalog = load_catalog(EXAMPLES / "pricing.yaml")
    free, pro, enterprise = (catalog.tiers[code] for code in ("free", "pro", "enterprise"))
    assert free.monthly_credits == D(100)
    assert [(q.model, q.per_day, q.per_month) for q in free.quotas] == [("demo-fast", 100, None)]
    assert free.monthly_api_calls == 1000
    assert (free.max_tokens_per_request, free.max_tokens_policy) == (1024, "clamp")
    assert free.rollover is None and free.byok_allowed is False
    assert pro.monthly_credits == D(10000)
    assert pro.rollover == Rollover(max_fraction=D("0.5"))
    assert pro.byok_allowed is True
    assert pro.stripe_price_ids.monthly and pro.stripe_price_ids.yearly
    assert pro.max_tokens_per_request is None and pro.quotas == ()
    assert enterprise.byok_allowed is True
    assert [rule.id for rule in catalog.byok_rules] == ["byok-standard"]
    assert catalog.free_models is not None and catalog.free_models.patterns == ("openrouter/*:free",)
    assert catalog.time_windows == ()  # e2e runs at any hour: no window in the demo catalog
    assert [d.id for d in catalog.volume_discounts] == ["volume-100"]


def test_the_free_tier_never_refuses_a_request_for_its_max_tokens() -> None:
    free = load_catalog(EXAMPLES / "pricing.yaml").tier("free")
    assert enforce_max_tokens(free, None) == 1024
    assert enforce_max_tokens(free, 50) == 50
    assert enforce_max_tokens(free, 4096) == 1024


def test_advanced_example_loads_every_section() -> None:
    catalog = load_catalog(EXAMPLES / "pricing-advanced.yaml")
    assert set(catalog.tiers) == {"starter", "team"}
    assert catalog.tiers["starter"].allowed_models[0] == "group:starter-models"
    assert catalog.tiers["starter"].max_tokens_policy == "reject"
    assert [w.id for w in catalog.time_windows] == ["night-berlin", "lunch-surge"]
    assert catalog.time_windows[0].timezone == "Europe/Berlin"
    assert catalog.free_models is not None and catalog.free_models.kind == "per_1k_tokens"
    assert [rule.active for rule in catalog.byok_rules] == [True, True, False]
    assert len(catalog.volume_discounts) == 3


def test_tiers_written_before_the_new_fields_load_with_neutral_defaults() -> None:
    catalog = parse_catalog("tiers: [{code: t, allowed_models: ['*']}]")
    plain = catalog.tier("t")
    assert plain.monthly_credits == 0
    assert plain.monthly_price_usd is None and plain.yearly_price_usd is None
    assert plain.rollover is None and plain.quotas == ()
    assert plain.monthly_api_calls is None and plain.max_tokens_per_request is None
    assert plain.max_tokens_policy == "reject"
    assert plain.seats is None and plain.byok_allowed is False
    assert plain.stripe_price_ids == StripePriceIds(monthly=None, yearly=None)
    assert catalog.byok_rules == () and catalog.free_models is None
    assert catalog.time_windows == () and catalog.volume_discounts == ()


@pytest.mark.parametrize(
    ("fields", "location", "reason"),
    [
        ("max_tokens_policy: truncate", "tiers[0].max_tokens_policy", "'reject' or 'clamp'"),
        ("max_tokens_per_request: 0", "tiers[0].max_tokens_per_request", "must be > 0"),
        ("monthly_credits: '-1'", "tiers[0].monthly_credits", "must not be negative"),
        ("rollover: {max_fraction: '1.5'}", "tiers[0].rollover", "at most 1"),
        ("rollover: {max_fration: '0.5'}", "tiers[0].rollover.max_fration", "did you mean 'max_fraction'"),
        ("stripe_price_ids: {monthy: x}", "tiers[0].stripe_price_ids.monthy", "did you mean 'monthly'"),
        ("quotas: [{model: m, per_day: yes}]", "tiers[0].quotas[0].per_day", "expected an integer"),
        ("seats: 0", "tiers[0].seats", "must be > 0"),
        ("byok_allowed: maybe", "tiers[0].byok_allowed", "valid boolean"),
        ("denied_models: ['group:']", "tiers[0].denied_models[0]", "needs a name"),
    ],
)
def test_tier_field_errors(fields: str, location: str, reason: str) -> None:
    text = f"tiers:\n  - code: t\n    allowed_models: ['*']\n    {fields}\n"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "t.yaml")
    assert caught.value.location == location
    assert reason in caught.value.reason
    assert caught.value.line == 4


# -- rollover ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rollover", "unused", "carried"),
    [
        ({"max_fraction": "0.5"}, "8000", "4000"),
        ({"max_fraction": "0.5", "max_credits": "1000"}, "8000", "1000"),
        ({}, "123.456", "123.456"),  # default: all of it
        ({"max_fraction": "0"}, "500", "0"),
        ({"max_fraction": "0.5"}, "0", "0"),
        ({"max_fraction": "0.5"}, "-5", "0"),  # overspent: nothing to carry
    ],
)
def test_rollover_carried_credits(rollover: dict[str, str], unused: str, carried: str) -> None:
    assert Rollover.model_validate(rollover).carried_credits(D(unused)) == D(carried)


def test_rollover_expiry() -> None:
    period_end, next_end = datetime(2025, 2, 28, tzinfo=UTC), datetime(2025, 3, 31, tzinfo=UTC)
    assert Rollover().expires_at(period_end, next_end) == next_end  # null: with the next period
    assert Rollover(expires_after_days=10).expires_at(period_end, next_end) == datetime(
        2025, 3, 10, tzinfo=UTC
    )


# -- max_tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "limit", "requested", "used"),
    [
        ("reject", None, None, None),  # no cap: the request as it is
        ("reject", None, 100_000, 100_000),
        ("reject", 1024, None, 1024),  # no max_tokens asked: bounded by the cap, not refused
        ("clamp", 1024, None, 1024),
        ("reject", 1024, 1024, 1024),  # exactly the cap is fine
        ("reject", 1024, 10, 10),
        ("clamp", 1024, 10, 10),
        ("clamp", 1024, 1025, 1024),
        ("clamp", 1024, 0, 0),
    ],
)
def test_enforce_max_tokens(policy: str, limit: int | None, requested: int | None, used: int | None) -> None:
    plan = tier(max_tokens_policy=policy, max_tokens_per_request=limit)
    assert enforce_max_tokens(plan, requested) == used


def test_reject_policy_raises_with_the_numbers() -> None:
    plan = tier(code="free", max_tokens_per_request=1024)
    with pytest.raises(MaxTokensExceeded) as caught:
        enforce_max_tokens(plan, 1025)
    error = caught.value
    assert (error.tier, error.requested, error.limit) == ("free", 1025, 1024)
    assert error.code == "max_tokens_exceeded"
    assert "1024" in error.hint


def test_enforce_max_tokens_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        enforce_max_tokens(tier(max_tokens_per_request=5), -1)
    with pytest.raises(TypeError):
        enforce_max_tokens(tier(max_tokens_per_request=5), True)


# -- access with LiteLLM access groups -----------------------------------------------


GROUPS_CATALOG = textwrap.dedent(
    """
    tiers:
      - code: starter
        allowed_models: ["group:cheap", "gpt-4o-mini"]
        denied_models: ["group:beta"]
      - code: all
        allowed_models: ["*"]
        denied_models: ["group:internal"]
    """
)


@pytest.mark.parametrize(
    ("tier_code", "model", "groups", "allowed"),
    [
        ("starter", "llama-3-8b", {"cheap"}, True),
        ("starter", "llama-3-8b", set(), False),  # the caller knows no group for it
        ("starter", "llama-3-8b", {"cheap", "beta"}, False),  # deny wins
        ("starter", "gpt-4o-mini", set(), True),
        ("starter", "group:cheap", set(), False),  # a model literally named like a group is not in it
        ("all", "anything", set(), True),
        ("all", "anything", {"internal"}, False),
        ("all", "anything", {"other"}, True),
    ],
)
def test_check_access_with_groups(tier_code: str, model: str, groups: set[str], allowed: bool) -> None:
    catalog = parse_catalog(GROUPS_CATALOG)
    if allowed:
        check_access(catalog, tier_code, model, groups=frozenset(groups))
    else:
        with pytest.raises(ModelNotAllowed):
            check_access(catalog, tier_code, model, groups=frozenset(groups))


def test_check_access_keeps_its_old_signature() -> None:
    catalog = parse_catalog(GROUPS_CATALOG)
    check_access(catalog, "starter", "gpt-4o-mini")
    with pytest.raises(ModelNotAllowed):
        check_access(catalog, "starter", "llama-3-8b")

"""BYOK fees, free models, time windows, volume discounts, and the order they apply in."""

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pricing import (
    ByokNotAllowed,
    Catalog,
    CatalogError,
    ModelRates,
    Priced,
    PriceStep,
    UnknownModelPrice,
    load_catalog,
    parse_catalog,
    price,
    quote,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
D = Decimal


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def catalog_of(text: str) -> Catalog:
    return parse_catalog(textwrap.dedent(text), "test.yaml")


# -- BYOK: the worked examples -------------------------------------------------------------

BYOK = catalog_of(
    """
    tiers:
      - {code: pro, allowed_models: ["*"], byok_allowed: true, default_markup: {kind: multiplier, value: "3"}}
      - {code: team, allowed_models: ["*"], byok_allowed: true}
      - {code: free, allowed_models: ["*"]}
    byok_rules:
      - id: byok-standard
        provider: "*"
        fee_percent: "5"
        min_charge_usd: "0.001"
        free_allowance_usd_per_month: "5"
    """
)


def byok_price(
    cost: str, month: str, *, catalog: Catalog = BYOK, tier: str = "pro", provider: str = "openai"
) -> Priced:
    return price(
        catalog,
        tier=tier,
        model="gpt-4o",
        provider=provider,
        cost_usd=D(cost),
        input_tokens=100,
        output_tokens=100,
        byok=True,
        byok_month_cost_usd=D(month),
    )


@pytest.mark.parametrize(
    ("cost", "month", "charged", "micro"),
    [
        ("0.005", "5", "0.001", 1_000_000),  # 5% of $0.005 = $0.00025, raised to the $0.001 minimum
        ("0.005", "20", "0.001", 1_000_000),  # allowance long used up
        ("0.005", "4", "0", 0),  # inside the $5 monthly allowance: free
        ("2", "4", "0.05", 50_000_000),  # $1 above the allowance: 5% of $1
        ("0.5", "4.8", "0.015", 15_000_000),  # $0.30 above
        ("1", "0", "0", 0),
        ("5", "0", "0", 0),  # exactly the allowance
        ("5.01", "0", "0.001", 1_000_000),  # 5% of $0.01 = $0.0005 → minimum
        ("0", "10", "0", 0),  # nothing to take a percentage of: no minimum either
    ],
)
def test_byok_fee_worked_examples(cost: str, month: str, charged: str, micro: int) -> None:
    priced = byok_price(cost, month)
    assert priced.charged_usd == D(charged)
    assert priced.micro_credits == micro
    assert priced.provider_cost_usd == D(cost)
    assert (priced.rule_id, priced.kind) == ("byok:byok-standard", "byok")
    assert [step.kind for step in priced.steps] == ["byok"]


def test_byok_explain() -> None:
    priced = byok_price("2", "4")
    assert priced.explain == (
        "BYOK: provider cost $2, $1 of the $5 monthly allowance left, 5% of $1 = $0.05"
        " by BYOK rule byok-standard = 50 credits"
    )
    minimum = byok_price("0.005", "5")
    assert "raised to minimum $0.001" in minimum.explain and minimum.explain.endswith("= 1 credits")


def test_byok_on_a_tier_without_byok_allowed_is_refused() -> None:
    with pytest.raises(ByokNotAllowed) as caught:
        byok_price("0.005", "5", tier="free")
    error = caught.value
    assert error.code == "byok_not_allowed"
    assert error.tier == "free" and error.reason == "plan"
    assert "own" in error.message and error.hint


@pytest.mark.parametrize(
    ("rules", "tier", "provider", "expected"),
    [
        # no rule at all
        ("[]", "pro", "openai", None),
        # inactive rule
        ('[{id: a, provider: "*", fee_percent: "5", active: false}]', "pro", "openai", None),
        # provider does not match
        ('[{id: a, provider: anthropic, fee_percent: "5"}]', "pro", "openai", None),
        ('[{id: a, provider: "anth*", fee_percent: "5"}]', "pro", "anthropic", "a"),
        # tiers restrict; [] means every BYOK tier
        ('[{id: a, provider: "*", fee_percent: "5", tiers: [team]}]', "pro", "openai", None),
        ('[{id: a, provider: "*", fee_percent: "5", tiers: [team]}]', "team", "openai", "a"),
        # priority, then order
        (
            '[{id: a, provider: "*", fee_percent: "5"}, {id: b, provider: openai, fee_percent: "3", priority: 1}]',
            "pro",
            "openai",
            "b",
        ),
        (
            '[{id: a, provider: "*", fee_percent: "5"}, {id: b, provider: "*", fee_percent: "3"}]',
            "pro",
            "x",
            "a",
        ),
    ],
)
def test_byok_rule_selection(rules: str, tier: str, provider: str, expected: str | None) -> None:
    catalog = parse_catalog(
        "tiers:\n"
        "  - {code: pro, allowed_models: ['*'], byok_allowed: true}\n"
        "  - {code: team, allowed_models: ['*'], byok_allowed: true}\n"
        f"byok_rules: {rules}\n"
    )
    if expected is None:
        with pytest.raises(ByokNotAllowed) as caught:
            byok_price("1", "0", catalog=catalog, tier=tier, provider=provider)
        assert caught.value.reason == "provider"
    else:
        assert (
            byok_price("1", "0", catalog=catalog, tier=tier, provider=provider).rule_id == f"byok:{expected}"
        )


def test_byok_quote_prices_the_fee_on_the_worst_case_cost() -> None:
    rates = ModelRates.per_million(D("2.5"), D("10"))
    quoted = quote(
        BYOK,
        tier="pro",
        model="gpt-4o",
        provider="openai",
        rates=rates,
        prompt_tokens=100_000,
        max_tokens=100_000,
        byok=True,
        byok_month_cost_usd=D("5"),
    )
    # worst case $0.25 + $1 = $1.25 provider cost, 5% = $0.0625
    assert quoted.charged_usd == D("0.0625")
    with pytest.raises(UnknownModelPrice):
        quote(
            BYOK,
            tier="pro",
            model="x",
            provider="openai",
            rates=None,
            prompt_tokens=1,
            max_tokens=1,
            byok=True,
        )


def test_byok_rule_validation() -> None:
    with pytest.raises(CatalogError, match="at most 100"):
        parse_catalog("tiers: []\nbyok_rules: [{id: a, fee_percent: '101'}]")
    with pytest.raises(CatalogError, match="unknown tier 'gold'"):
        parse_catalog("tiers: []\nbyok_rules: [{id: a, fee_percent: '1', tiers: [gold]}]")
    with pytest.raises(CatalogError, match="duplicate id 'a'"):
        parse_catalog("tiers: []\nbyok_rules: [{id: a, fee_percent: '1'}, {id: a, fee_percent: '2'}]")


# -- free models ---------------------------------------------------------------------------


def free_catalog(free: str, rules: str = "[]") -> Catalog:
    return parse_catalog(
        f"tiers: [{{code: t, allowed_models: ['*'], default_markup: {{kind: multiplier, value: '2'}}}}]\n"
        f"rules: {rules}\nfree_models: {free}\n"
    )


def free_price(catalog: Catalog, model: str, cost: str, *, cache_hit: bool = False) -> Priced:
    return price(
        catalog,
        tier="t",
        model=model,
        provider="openrouter",
        cost_usd=D(cost),
        input_tokens=1500,
        output_tokens=500,
        cache_hit=cache_hit,
    )


PER_1K = "{patterns: ['openrouter/*:free'], kind: per_1k_tokens, fee_per_1k_tokens_usd: '0.0001'}"


def test_a_free_model_pattern_pays_a_fee_per_1k_tokens() -> None:
    priced = free_price(free_catalog(PER_1K), "openrouter/llama:free", "0")
    assert priced.charged_usd == D("0.0002")  # 2000 tokens x $0.0001/1K
    assert (priced.rule_id, priced.kind) == ("free-model", "free_model")
    assert priced.explain == "free model: 2000 tokens x $0.0001/1K = $0.0002 by free_models = 0.2 credits"


def test_a_pattern_match_wins_even_with_a_cost() -> None:
    priced = free_price(free_catalog("{patterns: ['openrouter/*:free']}"), "openrouter/llama:free", "0.003")
    assert (priced.rule_id, priced.charged_usd) == ("free-model", D("0.003"))  # passthrough, no 2x


def test_a_zero_cost_is_a_free_model_unless_it_was_a_cache_hit() -> None:
    catalog = free_catalog(PER_1K)
    assert free_price(catalog, "some/model", "0").rule_id == "free-model"
    cached = free_price(catalog, "some/model", "0", cache_hit=True)
    assert (cached.rule_id, cached.charged_usd) == ("tier:t:default", D(0))
    assert free_price(catalog, "some/model", "0.001").rule_id == "tier:t:default"


def test_a_zero_cost_under_an_override_rule_keeps_the_list_price() -> None:
    rules = "[{id: llama, model: 'local-*', kind: override, input_per_1m: '1', output_per_1m: '2'}]"
    priced = free_price(free_catalog(PER_1K, rules), "local-llama", "0")
    assert priced.rule_id == "llama" and priced.charged_usd == D("0.0025")


def test_without_a_free_models_section_zero_costs_go_through_the_rules() -> None:
    catalog = parse_catalog(
        "tiers: [{code: t, allowed_models: ['*']}]\n"
        "rules: [{id: r, kind: passthrough, min_charge_usd: '0.01'}]\n"
    )
    assert free_price(catalog, "m", "0").charged_usd == D("0.01")


def test_free_models_validation() -> None:
    with pytest.raises(CatalogError, match="required for kind 'per_1k_tokens'"):
        free_catalog("{patterns: [x], kind: per_1k_tokens}")
    with pytest.raises(CatalogError, match="only used by kind 'per_1k_tokens'"):
        free_catalog("{patterns: [x], fee_per_1k_tokens_usd: '1'}")


def test_quote_of_a_declared_free_model_needs_no_rates() -> None:
    quoted = quote(
        free_catalog(PER_1K),
        tier="t",
        model="openrouter/x:free",
        provider="openrouter",
        rates=None,
        prompt_tokens=1000,
        max_tokens=1000,
    )
    assert quoted.charged_usd == D("0.0002") and quoted.rule_id == "free-model"


# -- time windows ----------------------------------------------------------------------------


def window_catalog(window: str) -> Catalog:
    return parse_catalog(
        "tiers: [{code: t, allowed_models: ['*']}, {code: u, allowed_models: ['*']}]\n"
        f"time_windows: [{window}]\n"
    )


NIGHT = "{id: night, start: '22:00', end: '06:00', timezone: Europe/Berlin, multiplier: '0.5'}"


def at(catalog: Catalog, now: datetime | None, *, tier: str = "t", model: str = "m") -> Priced:
    return price(
        catalog,
        tier=tier,
        model=model,
        provider="openai",
        cost_usd=D("0.01"),
        input_tokens=1,
        output_tokens=1,
        now=now,
    )


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (utc(2025, 1, 15, 20, 59), False),  # 21:59 CET
        (utc(2025, 1, 15, 21, 0), True),  # 22:00 CET: start is inclusive
        (utc(2025, 1, 15, 23, 30), True),  # 00:30 next day: wraps midnight
        (utc(2025, 1, 16, 4, 59), True),  # 05:59 CET
        (utc(2025, 1, 16, 5, 0), False),  # 06:00 CET: end is exclusive
        (utc(2025, 1, 16, 12, 0), False),
        # summer (CEST, UTC+2): the same UTC instants fall differently
        (utc(2025, 7, 15, 20, 30), True),  # 22:30 CEST
        (utc(2025, 7, 16, 4, 30), False),  # 06:30 CEST (05:30 in winter would be inside)
        (utc(2025, 1, 16, 4, 30), True),  # 05:30 CET
        # the night clocks go forward (2025-03-30 02:00 CET → 03:00 CEST)
        (utc(2025, 3, 29, 21, 30), True),  # 22:30 CET
        (utc(2025, 3, 30, 1, 30), True),  # 03:30 CEST
        (utc(2025, 3, 30, 3, 59), True),  # 05:59 CEST
        (utc(2025, 3, 30, 4, 0), False),  # 06:00 CEST, only 7 hours after 22:00 CET
        # the night clocks go back (2025-10-26 03:00 CEST → 02:00 CET)
        (utc(2025, 10, 26, 0, 30), True),  # 02:30 CEST
        (utc(2025, 10, 26, 1, 30), True),  # 02:30 CET, the repeated hour
        (utc(2025, 10, 26, 5, 0), False),  # 06:00 CET
        (None, False),  # no time given: no window
    ],
)
def test_a_window_wrapping_midnight_in_berlin(now: datetime | None, inside: bool) -> None:
    priced = at(window_catalog(NIGHT), now)
    assert priced.charged_usd == (D("0.005") if inside else D("0.01"))
    assert [step.kind for step in priced.steps] == (
        ["passthrough", "time_window"] if inside else ["passthrough"]
    )


def test_now_may_be_given_in_any_zone() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert at(window_catalog(NIGHT), datetime(2025, 1, 16, 7, 0, tzinfo=tokyo)).charged_usd == D("0.005")
    with pytest.raises(ValueError, match="aware"):
        at(window_catalog(NIGHT), datetime(2025, 1, 16, 7, 0))


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (utc(2025, 1, 17, 22, 0), True),  # Friday 23:00 CET: Friday's night
        (utc(2025, 1, 18, 1, 0), True),  # Saturday 02:00 CET: still Friday's night
        (utc(2025, 1, 16, 1, 0), False),  # Thursday 02:00 CET: Wednesday's night
        (utc(2025, 1, 18, 22, 0), False),  # Saturday 23:00 CET
    ],
)
def test_days_name_the_day_a_window_starts(now: datetime, inside: bool) -> None:
    catalog = window_catalog(
        "{id: fri, start: '22:00', end: '06:00', timezone: Europe/Berlin, days: [fri], multiplier: '0.5'}"
    )
    assert (at(catalog, now).charged_usd == D("0.005")) is inside


def test_window_selectors_and_priority() -> None:
    catalog = window_catalog(
        "{id: a, start: '00:00', end: '23:59', timezone: UTC, multiplier: '0.9'},"
        "{id: b, start: '10:00', end: '11:00', timezone: UTC, multiplier: '2', priority: 5, tiers: [u]},"
        "{id: c, start: '10:00', end: '11:00', timezone: UTC, multiplier: '3', priority: 1, models: ['gpt-*']}"
    )
    ten = utc(2025, 5, 5, 10, 30)
    assert at(catalog, ten).steps[-1].rule_id == "a"  # tier t, model m: only a matches
    assert at(catalog, ten, tier="u").steps[-1].rule_id == "b"  # priority 5 beats 0
    assert at(catalog, ten, model="gpt-4").steps[-1].rule_id == "c"
    assert at(catalog, ten, tier="u", model="gpt-4").steps[-1].rule_id == "b"
    assert at(catalog, utc(2025, 5, 5, 12)).steps[-1].rule_id == "a"


@pytest.mark.parametrize(
    ("window", "location", "reason"),
    [
        ("{id: w, start: '22:00', end: '22:00', timezone: UTC, multiplier: '1'}", "time_windows[0]", "equal"),
        (
            "{id: w, start: '24:00', end: '01:00', timezone: UTC, multiplier: '1'}",
            "time_windows[0].start",
            "HH:MM",
        ),
        (
            "{id: w, start: '1:00', end: '02:00', timezone: UTC, multiplier: '1'}",
            "time_windows[0].start",
            "HH:MM",
        ),
        ("{id: w, start: '01:00', end: '02:00', multiplier: '1'}", "time_windows[0].timezone", "missing"),
        (
            "{id: w, start: '01:00', end: '02:00', timezone: Mars/Base, multiplier: '1'}",
            "time_windows[0].timezone",
            "unknown time zone",
        ),
        (
            "{id: w, start: '01:00', end: '02:00', timezone: UTC, multiplier: '0'}",
            "time_windows[0].multiplier",
            "> 0",
        ),
        (
            "{id: w, start: '01:00', end: '02:00', timezone: UTC, multiplier: '1', days: [monday]}",
            "time_windows[0].days[0]",
            "'mon'",
        ),
        (
            "{id: w, start: '01:00', end: '02:00', timezone: UTC, multiplier: '1', tiers: [gold]}",
            "time_windows[0].tiers[0]",
            "unknown tier 'gold'",
        ),
    ],
)
def test_time_window_errors(window: str, location: str, reason: str) -> None:
    with pytest.raises(CatalogError) as caught:
        window_catalog(window)
    assert caught.value.location == location
    assert reason in caught.value.reason


# -- volume discounts ----------------------------------------------------------------------


VOLUME = catalog_of(
    """
    tiers: [{code: t, allowed_models: ["*"]}, {code: big, allowed_models: ["*"]}]
    volume_discounts:
      - {id: v1000, min_period_spend_usd: "1000", discount_percent: "20"}
      - {id: v100, min_period_spend_usd: "100", discount_percent: "10"}
      - {id: big-5000, min_period_spend_usd: "5000", discount_percent: "50", tiers: [big]}
    """
)


@pytest.mark.parametrize(
    ("tier", "spend", "discount", "charged"),
    [
        ("t", "0", None, "0.01"),
        ("t", "99.99", None, "0.01"),
        ("t", "100", "v100", "0.009"),  # reaching the level is enough
        ("t", "999", "v100", "0.009"),
        ("t", "1000", "v1000", "0.008"),  # the highest level reached, whatever the order in the file
        ("t", "99999", "v1000", "0.008"),  # big-5000 is not for tier t
        ("big", "5000", "big-5000", "0.005"),
    ],
)
def test_volume_discount_levels(tier: str, spend: str, discount: str | None, charged: str) -> None:
    priced = price(
        VOLUME,
        tier=tier,
        model="m",
        provider=None,
        cost_usd=D("0.01"),
        input_tokens=1,
        output_tokens=1,
        period_spend_usd=D(spend),
    )
    assert priced.charged_usd == D(charged)
    assert [s.rule_id for s in priced.steps if s.kind == "volume_discount"] == (
        [discount] if discount else []
    )


def test_volume_discount_validation() -> None:
    with pytest.raises(CatalogError, match="at most 100"):
        parse_catalog("volume_discounts: [{id: v, min_period_spend_usd: '1', discount_percent: '120'}]")
    with pytest.raises(CatalogError, match="must be > 0"):
        parse_catalog("volume_discounts: [{id: v, min_period_spend_usd: '1', discount_percent: '0'}]")


# -- precedence, all together -------------------------------------------------------------

ALL = catalog_of(
    """
    tiers:
      - {code: basic, allowed_models: ["*"], default_markup: {kind: multiplier, value: "1.2"}}
      - {code: pro, allowed_models: ["*"], byok_allowed: true}
      - {code: plain, allowed_models: ["*"]}
    rules:
      - {id: provider-anthropic, provider: anthropic, kind: percentage, value: "10"}
      - {id: model-glob, model: "gpt-4*", kind: multiplier, value: "1.5"}
      - {id: model-exact, model: gpt-4o, kind: multiplier, value: "2"}
      - {id: tier-pro, tier: pro, kind: multiplier, value: "3"}
      - {id: pro-gpt4o, tier: pro, model: gpt-4o, kind: multiplier, value: "4"}
      - {id: tiny-min, model: tiny, kind: passthrough, fee_usd: "0.0001", min_charge_usd: "0.01"}
    byok_rules:
      - {id: byok, provider: "*", fee_percent: "10"}
    free_models: {patterns: ["free/*"], kind: per_1k_tokens, fee_per_1k_tokens_usd: "0.001"}
    time_windows:
      - {id: night, start: "22:00", end: "06:00", timezone: Europe/Berlin, multiplier: "0.5"}
    volume_discounts:
      - {id: v100, min_period_spend_usd: "100", discount_percent: "10"}
      - {id: v1000, min_period_spend_usd: "1000", discount_percent: "20"}
    """
)

NIGHT_IN_BERLIN = utc(2025, 1, 15, 23, 0)  # 00:00 CET
DAY_IN_BERLIN = utc(2025, 1, 15, 11, 0)

PRECEDENCE: list[tuple[str, dict[str, Any], str, list[str], str]] = [
    # (case, call, base rule_id, step kinds, charged USD)
    ("tier default", {"tier": "basic"}, "tier:basic:default", ["multiplier"], "0.012"),
    ("passthrough", {"tier": "plain"}, "passthrough", ["passthrough"], "0.01"),
    ("tier rule beats tier default", {"tier": "pro"}, "tier-pro", ["multiplier"], "0.03"),
    ("model glob", {"model": "gpt-4-turbo"}, "model-glob", ["multiplier"], "0.015"),
    ("exact model beats glob", {"model": "gpt-4o"}, "model-exact", ["multiplier"], "0.02"),
    ("model + tier beats model", {"tier": "pro", "model": "gpt-4o"}, "pro-gpt4o", ["multiplier"], "0.04"),
    ("provider rule", {"provider": "anthropic"}, "provider-anthropic", ["percentage"], "0.011"),
    ("tier beats provider", {"tier": "pro", "provider": "anthropic"}, "tier-pro", ["multiplier"], "0.03"),
    (
        "model beats provider",
        {"model": "gpt-4o", "provider": "anthropic"},
        "model-exact",
        ["multiplier"],
        "0.02",
    ),
    ("free model pattern", {"model": "free/llama"}, "free-model", ["free_model"], "0.002"),
    ("zero cost is a free model", {"cost": "0"}, "free-model", ["free_model"], "0.002"),
    ("a cache hit is not", {"cost": "0", "cache_hit": True}, "tier:basic:default", ["multiplier"], "0"),
    ("night window", {"now": NIGHT_IN_BERLIN}, "tier:basic:default", ["multiplier", "time_window"], "0.006"),
    ("daytime: no window", {"now": DAY_IN_BERLIN}, "tier:basic:default", ["multiplier"], "0.012"),
    ("volume", {"spend": "150"}, "tier:basic:default", ["multiplier", "volume_discount"], "0.0108"),
    (
        "window then volume",
        {"now": NIGHT_IN_BERLIN, "spend": "1500"},
        "tier:basic:default",
        ["multiplier", "time_window", "volume_discount"],
        "0.0048",
    ),
    (
        "adjustments apply to free models too",
        {"model": "free/llama", "now": NIGHT_IN_BERLIN},
        "free-model",
        ["free_model", "time_window"],
        "0.001",
    ),
    (
        "the minimum is the floor after every discount",
        {"model": "tiny", "cost": "0.001", "now": NIGHT_IN_BERLIN, "spend": "1500"},
        "tiny-min",
        ["passthrough", "time_window", "volume_discount", "min_charge"],
        "0.01",
    ),
    (
        "fee before the window",
        {"model": "tiny", "cost": "0.04", "now": NIGHT_IN_BERLIN},
        "tiny-min",
        ["passthrough", "time_window"],
        "0.02005",
    ),
    (
        "BYOK replaces everything",
        {"tier": "pro", "model": "gpt-4o", "byok": True, "now": NIGHT_IN_BERLIN, "spend": "1500"},
        "byok:byok",
        ["byok"],
        "0.001",
    ),
    (
        "BYOK beats a free model",
        {"tier": "pro", "model": "free/x", "byok": True},
        "byok:byok",
        ["byok"],
        "0.001",
    ),
]


@pytest.mark.parametrize(
    ("call", "rule_id", "kinds", "charged"),
    [case[1:] for case in PRECEDENCE],
    ids=[case[0] for case in PRECEDENCE],
)
def test_precedence(call: dict[str, Any], rule_id: str, kinds: list[str], charged: str) -> None:
    priced = price(
        ALL,
        tier=call.get("tier", "basic"),
        model=call.get("model", "m"),
        provider=call.get("provider", "openai"),
        cost_usd=D(call.get("cost", "0.01")),
        input_tokens=1000,
        output_tokens=1000,
        now=call.get("now"),
        period_spend_usd=D(call.get("spend", "0")),
        byok=call.get("byok", False),
        cache_hit=call.get("cache_hit", False),
    )
    assert priced.rule_id == rule_id
    assert [step.kind for step in priced.steps] == kinds
    assert priced.charged_usd == D(charged)
    assert priced.steps[-1].usd_after == priced.charged_usd
    assert priced.steps[0].rule_id == rule_id


def test_byok_where_the_tier_does_not_allow_it() -> None:
    with pytest.raises(ByokNotAllowed):
        price(
            ALL,
            tier="basic",
            model="m",
            provider=None,
            cost_usd=D(1),
            input_tokens=0,
            output_tokens=0,
            byok=True,
        )


def test_steps_and_explain_with_adjustments() -> None:
    priced = price(
        ALL,
        tier="basic",
        model="tiny",
        provider="openai",
        cost_usd=D("0.001"),
        input_tokens=1,
        output_tokens=1,
        now=NIGHT_IN_BERLIN,
        period_spend_usd=D("1500"),
    )
    assert priced.steps == (
        PriceStep("tiny-min", "passthrough", "$0.001 at cost, + fee $0.0001 = $0.0011", D("0.0011")),
        PriceStep("night", "time_window", "x 0.5 in time window night = $0.00055", D("0.00055")),
        PriceStep(
            "v1000",
            "volume_discount",
            "- 20% volume discount v1000 (period spend $1500) = $0.00044",
            D("0.00044"),
        ),
        PriceStep("tiny-min", "min_charge", "raised to minimum $0.01", D("0.01")),
    )
    assert priced.explain == (
        "$0.001 at cost, + fee $0.0001 = $0.0011 by rule tiny-min; x 0.5 in time window night = $0.00055; "
        "- 20% volume discount v1000 (period spend $1500) = $0.00044; raised to minimum $0.01 = 10 credits"
    )


def test_quote_applies_the_same_context() -> None:
    rates = ModelRates.per_million(D("1"), D("1"))
    common: dict[str, Any] = {"tier": "basic", "model": "m", "provider": "openai", "rates": rates}
    plain = quote(ALL, prompt_tokens=5000, max_tokens=5000, **common)
    assert plain.charged_usd == D("0.012")
    adjusted = quote(
        ALL, prompt_tokens=5000, max_tokens=5000, now=NIGHT_IN_BERLIN, period_spend_usd=D("150"), **common
    )
    assert adjusted.charged_usd == D("0.0054")
    assert [step.kind for step in adjusted.steps] == ["multiplier", "time_window", "volume_discount"]


def test_old_calls_price_exactly_as_before() -> None:
    catalog = load_catalog(EXAMPLES / "pricing.yaml")
    args: dict[str, Any] = {
        "model": "demo-fast",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 20,
    }
    # the e2e figure: a pro call on demo-fast (gpt-4o mock, 10 + 20 tokens) is $0.00045
    pro = price(catalog, tier="pro", cost_usd=D("0.000225"), **args)
    assert (pro.charged_usd, pro.micro_credits, pro.rule_id) == (D("0.00045"), 450_000, "demo-fast-2x")
    assert pro.explain == "$0.000225 x 2 = $0.00045 by rule demo-fast-2x = 0.45 credits"
    # and at any hour, with no spend passed, nothing else applies
    for hour in range(24):
        at_hour = price(catalog, tier="pro", cost_usd=D("0.000225"), now=utc(2025, 6, 1, hour), **args)
        assert at_hour.micro_credits == 450_000


def test_context_is_checked() -> None:
    args: dict[str, Any] = {
        "tier": "basic",
        "model": "m",
        "provider": None,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    with pytest.raises(ValueError, match="must not be negative"):
        price(ALL, cost_usd=D(1), period_spend_usd=D(-1), **args)
    with pytest.raises(TypeError):
        price(ALL, cost_usd=D(1), byok_month_cost_usd=1.5, **args)  # type: ignore[arg-type]

import textwrap
from decimal import Decimal

import pytest

from pricing import ModelPriceView, ModelRates, UnknownTier, parse_catalog, price_list

D = Decimal

CATALOG = parse_catalog(
    textwrap.dedent(
        """
        usd_per_credit: "0.001"
        tiers:
          - code: pro
            allowed_models: ["*"]
            denied_models: ["group:internal"]
            default_markup: {kind: multiplier, value: "1.2"}
          - code: free
            allowed_models: ["demo-*"]
        rules:
          - {id: demo-fast-2x, model: demo-fast, kind: multiplier, value: "2.0"}
          - {id: gpt4o-min, model: "gpt-4o*", kind: multiplier, value: "1.5", min_charge_usd: "0.01"}
          - {id: anthropic-10pct, provider: anthropic, kind: percentage, value: "10"}
          - {id: embed-fee, model: "text-embedding-*", kind: fixed, fee_usd: "0.0001"}
          - {id: llama, model: "local-*", kind: override, input_per_1m: "0.20", output_per_1m: "0.60"}
        free_models: {patterns: ["openrouter/*:free"], kind: per_1k_tokens, fee_per_1k_tokens_usd: "0.0001"}
        """
    )
)

GPT4O = ModelRates.per_million(D("2.5"), D("10"))
MODELS = {
    "demo-fast": GPT4O,
    "gpt-4o": GPT4O,
    "claude-3-haiku": ModelRates.per_million(D("0.25"), D("1.25")),
    "text-embedding-3-small": ModelRates.per_million(D("0.02"), D("0")),
    "local-llama": ModelRates(D(0), D(0)),
    "openrouter/llama:free": ModelRates(D(0), D(0)),
    "secret-model": GPT4O,
    "plain": ModelRates.per_million(D("1"), D("3")),
}


def views() -> dict[str, ModelPriceView]:
    listed = price_list(
        CATALOG,
        "pro",
        MODELS,
        groups={"secret-model": frozenset({"internal"})},
        providers={"claude-3-haiku": "anthropic"},
    )
    assert [view.model for view in listed] == sorted(view.model for view in listed)
    return {view.model: view for view in listed}


def test_a_multiplier_rule_per_million_tokens() -> None:
    fast = views()["demo-fast"]
    # $2.50 / $10 per 1M at cost, x2 = $5 / $20 = 5000 / 20000 credits
    assert fast == ModelPriceView(
        model="demo-fast",
        input_credits_per_1m=D(5000),
        output_credits_per_1m=D(20000),
        fee_per_call_credits=D(0),
        min_charge_credits=None,
        rule_id="demo-fast-2x",
        kind="multiplier",
    )


@pytest.mark.parametrize(
    ("model", "input_credits", "output_credits", "fee", "minimum", "rule_id"),
    [
        ("gpt-4o", "3750", "15000", "0", "10", "gpt4o-min"),  # x1.5, min $0.01 = 10 credits apart
        ("claude-3-haiku", "275", "1375", "0", None, "anthropic-10pct"),  # +10% by provider
        ("text-embedding-3-small", "20", "0", "0.1", None, "embed-fee"),  # the $0.0001 fee per call apart
        ("local-llama", "200", "600", "0", None, "llama"),  # the override's own list price
        ("openrouter/llama:free", "100", "100", "0", None, "free-model"),  # $0.0001/1K = $0.10/1M
        ("plain", "1200", "3600", "0", None, "tier:pro:default"),  # the tier's x1.2
    ],
)
def test_price_list_figures(
    model: str, input_credits: str, output_credits: str, fee: str, minimum: str | None, rule_id: str
) -> None:
    view = views()[model]
    assert view.input_credits_per_1m == D(input_credits)
    assert view.output_credits_per_1m == D(output_credits)
    assert view.fee_per_call_credits == D(fee)
    assert view.min_charge_credits == (None if minimum is None else D(minimum))
    assert view.rule_id == rule_id


def test_only_models_the_tier_may_use_are_listed() -> None:
    assert "secret-model" not in views()  # denied through its access group
    free = price_list(CATALOG, "free", MODELS)
    assert [view.model for view in free] == ["demo-fast"]


def test_figures_are_plain_numbers() -> None:
    assert str(views()["demo-fast"].input_credits_per_1m) == "5000"
    assert str(views()["text-embedding-3-small"].fee_per_call_credits) == "0.1"


def test_catalog_prices_override_the_given_rates() -> None:
    catalog = parse_catalog(
        "tiers: [{code: t, allowed_models: ['*']}]\nmodels: {m: {input_per_1m: '1', output_per_1m: '2'}}\n"
    )
    [view] = price_list(catalog, "t", {"m": GPT4O})
    assert (view.input_credits_per_1m, view.output_credits_per_1m) == (D(1000), D(2000))


def test_unknown_tier() -> None:
    with pytest.raises(UnknownTier):
        price_list(CATALOG, "gold", MODELS)

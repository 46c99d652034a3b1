import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from pricing import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    Catalog,
    ModelRates,
    Priced,
    UnknownModelPrice,
    UnknownTier,
    load_catalog,
    parse_catalog,
    price,
    quote,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
D = Decimal


def catalog_with(rule: str, *, usd_per_credit: str = "0.001", models: str = "") -> Catalog:
    text = f"""
        usd_per_credit: "{usd_per_credit}"
        tiers: [{{code: t, allowed_models: ["*"]}}]
        rules:
          - {{id: r, {rule}}}
        models: {{{models}}}
        """
    return parse_catalog(textwrap.dedent(text))


def price_of(catalog: Catalog, cost: str, input_tokens: int = 0, output_tokens: int = 0) -> Priced:
    return price(
        catalog,
        tier="t",
        model="m",
        provider="openai",
        cost_usd=D(cost),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


# -- the worked examples ---------------------------------------------------------------


def test_three_cents_at_2x_is_sixty_credits() -> None:
    priced = price_of(catalog_with('kind: multiplier, value: "2"'), "0.03")
    assert priced.charged_usd == D("0.06")
    assert priced.micro_credits == 60_000_000
    assert priced.credits == D("60")


def test_500_in_1000_out_at_1_and_3_cents_per_1k_is_035() -> None:
    rates = ModelRates(input_per_token=D("0.01") / 1000, output_per_token=D("0.03") / 1000)
    cost = 500 * rates.input_per_token + 1000 * rates.output_per_token
    assert cost == D("0.035")
    catalog = catalog_with("kind: passthrough")
    quoted = quote(
        catalog, tier="t", model="m", provider=None, rates=rates, prompt_tokens=500, max_tokens=1000
    )
    assert quoted.provider_cost_usd == D("0.035")
    assert quoted.micro_credits == 35_000_000


def test_override_rule_of_10_and_30_per_million_prices_500_in_1000_out_at_035() -> None:
    catalog = catalog_with("kind: override, input_per_1m: 10, output_per_1m: 30")
    priced = price_of(catalog, "0.5", input_tokens=500, output_tokens=1000)
    assert priced.charged_usd == D("0.035")
    assert priced.provider_cost_usd == D("0.5")  # reported, but replaced
    assert priced.micro_credits == 35_000_000
    assert priced.kind == "override"


@pytest.mark.parametrize(("cost", "charged", "credits"), [("0.004", "0.01", 10), ("0.02", "0.03", 30)])
def test_one_and_a_half_x_with_a_cent_minimum(cost: str, charged: str, credits: int) -> None:
    catalog = catalog_with('model: m, kind: multiplier, value: "1.5", min_charge_usd: "0.01"')
    priced = price_of(catalog, cost)
    assert priced.charged_usd == D(charged)
    assert priced.micro_credits == credits * 1_000_000


def test_explain_tells_the_story() -> None:
    catalog = parse_catalog(
        textwrap.dedent(
            """
            tiers: [{code: t, allowed_models: ["*"]}]
            rules:
              - {id: gpt4o-min, model: m, kind: multiplier, value: "1.5", min_charge_usd: "0.01"}
            """
        )
    )
    priced = price_of(catalog, "0.004")
    assert priced.explain == "$0.004 x 1.5 = $0.006, raised to minimum $0.01 by rule gpt4o-min = 10 credits"
    assert priced.rule_id == "gpt4o-min"


# -- every kind -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "cost", "charged", "explain_part"),
    [
        ("kind: passthrough", "0.000225", "0.000225", "$0.000225 at cost"),
        ('kind: multiplier, value: "1.25"', "0.0008", "0.001", "$0.0008 x 1.25 = $0.001"),
        ('kind: multiplier, value: "0.5"', "0.01", "0.005", "x 0.5"),
        ("kind: percentage, value: 10", "0.01", "0.011", "$0.01 + 10% = $0.011"),
        ("kind: percentage, value: -20", "0.01", "0.008", "$0.01 - 20% = $0.008"),
        ("kind: percentage, value: 0.5", "0.02", "0.0201", "+ 0.5%"),
        ('kind: fixed, fee_usd: "0.0001"', "0.00002", "0.00012", "$0.00002 + fee $0.0001 = $0.00012"),
        ("kind: fixed, fee_usd: 0", "0.003", "0.003", "+ fee $0"),
    ],
)
def test_markup_kinds(rule: str, cost: str, charged: str, explain_part: str) -> None:
    priced = price_of(catalog_with(rule), cost, 10, 20)
    assert priced.charged_usd == D(charged)
    assert priced.provider_cost_usd == D(cost)
    assert priced.kind == rule.split(",")[0].removeprefix("kind: ")
    assert priced.rule_id == "r"
    assert explain_part in priced.explain


def test_tier_default_and_passthrough_fallbacks() -> None:
    catalog = parse_catalog(
        textwrap.dedent(
            """
            tiers:
              - {code: pro, allowed_models: ["*"], default_markup: {kind: multiplier, value: "1.2"}}
              - {code: free, allowed_models: ["*"]}
            """
        )
    )
    args = {"model": "m", "provider": None, "cost_usd": D("0.01"), "input_tokens": 1, "output_tokens": 1}
    pro = price(catalog, tier="pro", **args)  # type: ignore[arg-type]
    assert (pro.rule_id, pro.kind, pro.charged_usd) == ("tier:pro:default", "multiplier", D("0.012"))
    assert "by tier pro default" in pro.explain
    free = price(catalog, tier="free", **args)  # type: ignore[arg-type]
    assert (free.rule_id, free.kind, free.charged_usd) == ("passthrough", "passthrough", D("0.01"))


# -- fees and minimums --------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "cost", "charged"),
    [
        ('kind: passthrough, fee_usd: "0.001"', "0.002", "0.003"),
        ('kind: multiplier, value: 2, fee_usd: "0.001"', "0.002", "0.005"),  # fee after the factor
        ('kind: percentage, value: 50, fee_usd: "0.001"', "0.002", "0.004"),
        ('kind: override, input_per_1m: 1, output_per_1m: 2, fee_usd: "0.001"', "9", "0.002004"),
        ('kind: fixed, fee_usd: "0.001"', "0.002", "0.003"),  # the fee is added once, not twice
        # the minimum applies after the fee
        ('kind: multiplier, value: 2, fee_usd: "0.001", min_charge_usd: "0.01"', "0.002", "0.01"),
        ('kind: multiplier, value: 2, fee_usd: "0.001", min_charge_usd: "0.004"', "0.002", "0.005"),
        ('kind: passthrough, min_charge_usd: "0.01"', "0", "0.01"),
        ('kind: passthrough, min_charge_usd: "0.01"', "0.01", "0.01"),
    ],
)
def test_fees_and_minimum(rule: str, cost: str, charged: str) -> None:
    priced = price_of(catalog_with(rule), cost, input_tokens=1000, output_tokens=2)
    assert priced.charged_usd == D(charged)
    assert priced.micro_credits == int(D(charged) / D("0.001") * 1_000_000)


# -- rounding ------------------------------------------------------------------------


def test_gpt4o_mock_cost_at_cost_is_225000_micro() -> None:
    priced = price_of(catalog_with("kind: passthrough"), "0.000225")
    assert priced.micro_credits == 225_000


def test_rounding_happens_once_at_the_end() -> None:
    # 0.0000000004 x 3 = 0.0000000012 USD = 1.2 µcr → 2; rounding the cost first would give 1 x 3 = 3.
    priced = price_of(catalog_with("kind: multiplier, value: 3"), "0.0000000004")
    assert priced.charged_usd == D("0.0000000012")
    assert priced.micro_credits == 2


def test_non_default_usd_per_credit() -> None:
    catalog = catalog_with('kind: multiplier, value: "1.5"', usd_per_credit="0.01")
    priced = price_of(catalog, "0.000225")
    assert priced.charged_usd == D("0.0003375")
    assert priced.micro_credits == 33_750  # 0.03375 credits at $0.01 each
    assert priced.explain.endswith("= 0.03375 credits")
    tiny = price_of(catalog, "0.0000000001")  # 0.015 µcr → 1
    assert tiny.micro_credits == 1


def test_exact_decimal_no_float_drift() -> None:
    # 0.1 + 0.2 style inputs: binary floats would give 0.30000000000000004.
    priced = price_of(catalog_with('kind: fixed, fee_usd: "0.2"'), "0.1")
    assert priced.charged_usd == D("0.3")
    assert priced.micro_credits == 300_000_000


def test_price_refuses_bad_input() -> None:
    catalog = catalog_with("kind: passthrough")
    with pytest.raises(TypeError):
        price(catalog, tier="t", model="m", provider=None, cost_usd=0.1, input_tokens=0, output_tokens=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        price_of(catalog, "-0.01")
    with pytest.raises(ValueError):
        price_of(catalog, "0.01", input_tokens=-1)
    with pytest.raises(UnknownTier):
        price(catalog, tier="gold", model="m", provider=None, cost_usd=D(0), input_tokens=0, output_tokens=0)


# -- quote: the worst case ---------------------------------------------------------------

RATES = ModelRates.per_million(D("2.50"), D("10.00"), max_output_tokens=16_384)


def quote_of(catalog: Catalog, *, rates: ModelRates | None = RATES, max_tokens: int | None = None) -> Priced:
    return quote(
        catalog, tier="t", model="m", provider=None, rates=rates, prompt_tokens=1000, max_tokens=max_tokens
    )


def test_quote_uses_max_tokens_when_given() -> None:
    quoted = quote_of(catalog_with("kind: passthrough"), max_tokens=100)
    assert quoted.provider_cost_usd == D("0.0025") + D("0.001")  # 1000 x 2.5/1M + 100 x 10/1M
    assert quoted.micro_credits == 3_500_000


def test_quote_max_tokens_above_the_models_cap_is_taken_as_asked() -> None:
    quoted = quote_of(catalog_with("kind: passthrough"), max_tokens=100_000)
    assert quoted.provider_cost_usd == D("0.0025") + D("1")


def test_quote_falls_back_to_the_rates_cap() -> None:
    quoted = quote_of(catalog_with("kind: passthrough"))
    assert quoted.provider_cost_usd == D("0.0025") + 16_384 * D("0.00001")


def test_quote_catalog_entry_overrides_rates_and_cap() -> None:
    catalog = catalog_with(
        "kind: passthrough", models='m: {input_per_1m: "1", output_per_1m: "2", max_output_tokens: 500}'
    )
    quoted = quote_of(catalog)
    assert quoted.provider_cost_usd == D("0.001") + D("0.001")  # 1000 x 1/1M + 500 x 2/1M


def test_quote_catalog_cap_alone_keeps_the_callers_rates() -> None:
    catalog = catalog_with("kind: passthrough", models="m: {max_output_tokens: 200}")
    quoted = quote_of(catalog)
    assert quoted.provider_cost_usd == D("0.0025") + D("0.002")


def test_quote_default_completion_budget() -> None:
    rates = ModelRates(input_per_token=D("0.0000025"), output_per_token=D("0.00001"))
    quoted = quote_of(catalog_with("kind: passthrough"), rates=rates)
    assert DEFAULT_MAX_OUTPUT_TOKENS == 4096
    assert quoted.provider_cost_usd == D("0.0025") + 4096 * D("0.00001")


def test_quote_applies_the_same_markup_as_price() -> None:
    catalog = catalog_with('kind: multiplier, value: "1.5", fee_usd: "0.001", min_charge_usd: "0.005"')
    quoted = quote_of(catalog, max_tokens=100)
    assert quoted.charged_usd == D("0.0035") * D("1.5") + D("0.001")
    priced = price_of(catalog, str(quoted.provider_cost_usd))
    assert priced.micro_credits == quoted.micro_credits


def test_quote_override_uses_the_worst_case_tokens() -> None:
    catalog = catalog_with("kind: override, input_per_1m: 10, output_per_1m: 30")
    quoted = quote_of(catalog, max_tokens=1000)
    assert quoted.charged_usd == D("0.01") + D("0.03")
    # a model nobody prices is still quotable when an override prices it
    unpriced = quote_of(catalog, rates=None)
    assert unpriced.charged_usd == D("0.01") + DEFAULT_MAX_OUTPUT_TOKENS * D("0.00003")


def test_quote_without_any_rates_is_an_error() -> None:
    with pytest.raises(UnknownModelPrice) as caught:
        quote_of(catalog_with("kind: passthrough"), rates=None)
    assert caught.value.model == "m"
    assert "models:" in str(caught.value)


def test_quote_the_example_demo_catalog() -> None:
    catalog = load_catalog(EXAMPLES / "pricing.yaml")
    rates = ModelRates.per_million(D("0.15"), D("0.60"), max_output_tokens=16_384)
    quoted = quote(
        catalog,
        tier="free",
        model="demo-fast",
        provider="openai",
        rates=rates,
        prompt_tokens=20,
        max_tokens=50,
    )
    assert quoted.rule_id == "demo-fast-2x"
    assert quoted.charged_usd == (20 * D("0.00000015") + 50 * D("0.0000006")) * 2
    assert quoted.micro_credits == 66_000


def test_model_rates_validate() -> None:
    with pytest.raises(TypeError):
        ModelRates(input_per_token=1e-6, output_per_token=D(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ModelRates(input_per_token=D("-1"), output_per_token=D(0))
    assert ModelRates.per_million(D("2.5"), D("10")).input_per_token == D("0.0000025")

"""What a tier pays per model, for clients: credits per 1M input and output tokens.

Each figure is the base markup applied to the provider cost of one million
tokens (or the override's own list price). A per-call fee and a minimum
charge are not spread over tokens but shown as their own fields, because a
small call pays them in full. Free models show their free-model rate. Time
windows and volume discounts depend on when and how much an account calls,
so a list price leaves them out; ``price()`` shows them per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from types import MappingProxyType

from pricing.catalog import Catalog, Markup
from pricing.free_models import FREE_MODEL_RULE_ID, FreeModels, is_free_model
from pricing.matching import resolve_markup
from pricing.money import EXACT_PRECISION
from pricing.patterns import NO_GROUPS
from pricing.quoting import TOKENS_PER_MILLION, ModelRates, effective_rates

_NO_GROUPS_BY_MODEL: Mapping[str, frozenset[str]] = MappingProxyType({})
_NO_PROVIDERS: Mapping[str, str | None] = MappingProxyType({})


@dataclass(frozen=True)
class ModelPriceView:
    model: str
    input_credits_per_1m: Decimal
    output_credits_per_1m: Decimal
    fee_per_call_credits: Decimal
    min_charge_credits: Decimal | None
    rule_id: str
    kind: str


def price_list(
    catalog: Catalog,
    tier: str,
    models: Mapping[str, ModelRates],
    *,
    groups: Mapping[str, frozenset[str]] = _NO_GROUPS_BY_MODEL,
    providers: Mapping[str, str | None] = _NO_PROVIDERS,
) -> list[ModelPriceView]:
    """The models of ``models`` that ``tier`` may use, by name, with their prices in credits.

    ``models`` are the provider rates (LiteLLM's cost map), laid under the
    catalog's own ``models:`` entries; ``groups`` and ``providers`` give each
    model's access groups and provider, for ``group:`` patterns and
    provider rules.
    """
    entry = catalog.tier(tier)
    views: list[ModelPriceView] = []
    for model in sorted(models):
        model_groups = groups.get(model, NO_GROUPS)
        if not entry.allows(model, model_groups):
            continue
        rates = effective_rates(catalog, model, models[model])
        assert rates is not None  # effective_rates only returns None when given None
        resolved = resolve_markup(catalog, tier=tier, model=model, provider=providers.get(model))
        free = catalog.free_models
        if free is not None and is_free_model(
            free,
            model=model,
            cost=rates.input_per_token + rates.output_per_token,
            cache_hit=False,
            base_kind=resolved.markup.kind,
            groups=model_groups,
        ):
            input_usd, output_usd = _free_per_million(free, rates)
            fee, minimum = Decimal(0), None
            rule_id, kind = FREE_MODEL_RULE_ID, "free_model"
        else:
            markup = resolved.markup
            input_usd = _marked_up_per_million(markup, rates.input_per_token, markup.input_per_1m)
            output_usd = _marked_up_per_million(markup, rates.output_per_token, markup.output_per_1m)
            fee, minimum = markup.fee_usd or Decimal(0), markup.min_charge_usd
            rule_id, kind = resolved.rule_id, markup.kind
        views.append(
            ModelPriceView(
                model=model,
                input_credits_per_1m=_credits(input_usd, catalog),
                output_credits_per_1m=_credits(output_usd, catalog),
                fee_per_call_credits=_credits(fee, catalog),
                min_charge_credits=None if minimum is None else _credits(minimum, catalog),
                rule_id=rule_id,
                kind=kind,
            )
        )
    return views


def _marked_up_per_million(markup: Markup, per_token: Decimal, override_per_1m: Decimal | None) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        cost = per_token * TOKENS_PER_MILLION
        if markup.kind == "multiplier":
            assert markup.value is not None  # guaranteed by Markup's validation
            return cost * markup.value
        if markup.kind == "percentage":
            assert markup.value is not None
            return cost * (100 + markup.value) / 100
        if markup.kind == "override":
            assert override_per_1m is not None
            return override_per_1m
        return cost  # passthrough, and fixed (whose fee is per call, shown apart)


def _free_per_million(free: FreeModels, rates: ModelRates) -> tuple[Decimal, Decimal]:
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        if free.kind == "per_1k_tokens":
            assert free.fee_per_1k_tokens_usd is not None
            per_million = free.fee_per_1k_tokens_usd * (TOKENS_PER_MILLION // 1000)
            return per_million, per_million
        return rates.input_per_token * TOKENS_PER_MILLION, rates.output_per_token * TOKENS_PER_MILLION


def _credits(usd: Decimal, catalog: Catalog) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        value = usd / catalog.usd_per_credit
        # Plain figures for clients: 2500 rather than 2.500E+3 or 2500.000000.
        return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()

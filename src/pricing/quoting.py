"""Turn a provider cost into a charge: ``price()`` after a call, ``quote()`` before it.

Both select the markup the same way (see :mod:`pricing.matching`), compute in
exact ``Decimal`` arithmetic, and round once, at the end, with
:func:`pricing.money.usd_to_micro` (ceiling to the whole µcr).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from pricing.catalog import Catalog
from pricing.errors import UnknownModelPrice
from pricing.matching import ResolvedMarkup, resolve_markup
from pricing.money import (
    EXACT_PRECISION,
    as_decimal,
    format_decimal,
    format_usd,
    micro_to_credits,
    usd_to_micro,
)

TOKENS_PER_MILLION = 1_000_000

# The completion budget a quote assumes when neither the request nor any
# price list bounds it: the common output cap of current chat models.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


@dataclass(frozen=True)
class ModelRates:
    """A model's provider prices in USD per token, as in LiteLLM's cost map."""

    input_per_token: Decimal
    output_per_token: Decimal
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("input_per_token", "output_per_token"):
            if as_decimal(getattr(self, name), name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_output_tokens is not None:
            _check_count(self.max_output_tokens, "max_output_tokens")

    @classmethod
    def per_million(
        cls, input_per_1m: Decimal, output_per_1m: Decimal, max_output_tokens: int | None = None
    ) -> ModelRates:
        with localcontext() as ctx:
            ctx.prec = EXACT_PRECISION
            return cls(
                as_decimal(input_per_1m, "input_per_1m") / TOKENS_PER_MILLION,
                as_decimal(output_per_1m, "output_per_1m") / TOKENS_PER_MILLION,
                max_output_tokens,
            )


@dataclass(frozen=True)
class Priced:
    """A charge and how it was reached."""

    micro_credits: int
    provider_cost_usd: Decimal
    charged_usd: Decimal
    """After markup, fees and minimum; before rounding to µcr."""
    rule_id: str
    """The rule's id, ``tier:<code>:default`` or ``passthrough``."""
    kind: str
    explain: str

    @property
    def credits(self) -> Decimal:
        return micro_to_credits(self.micro_credits)


def price(
    catalog: Catalog,
    *,
    tier: str,
    model: str,
    provider: str | None,
    cost_usd: Decimal,
    input_tokens: int,
    output_tokens: int,
) -> Priced:
    """Price a provider cost reported after a call (LiteLLM's ``response_cost``)."""
    cost = as_decimal(cost_usd, "cost_usd")
    if cost < 0:
        raise ValueError(f"cost_usd must not be negative, got {cost}")
    _check_count(input_tokens, "input_tokens")
    _check_count(output_tokens, "output_tokens")
    resolved = resolve_markup(catalog, tier=tier, model=model, provider=provider)
    return _apply(catalog, resolved, cost, input_tokens, output_tokens)


def quote(
    catalog: Catalog,
    *,
    tier: str,
    model: str,
    provider: str | None,
    rates: ModelRates | None,
    prompt_tokens: int,
    max_tokens: int | None,
) -> Priced:
    """Price the worst case of a call before it is made, for a hold.

    The completion is assumed to run to ``max_tokens`` when the request gives
    it (even above the model's cap: the provider may reject it, but the hold
    covers what was asked), else to the model's ``max_output_tokens`` (the
    catalog's ``models:`` entry first, then ``rates``), else to
    :data:`DEFAULT_MAX_OUTPUT_TOKENS`. The catalog's rates for the model win
    over ``rates``; ``rates`` may be ``None`` for a model LiteLLM does not
    price, which is an error (``UnknownModelPrice``) unless the catalog or an
    ``override`` rule prices it.
    """
    _check_count(prompt_tokens, "prompt_tokens")
    if max_tokens is not None:
        _check_count(max_tokens, "max_tokens")
    resolved = resolve_markup(catalog, tier=tier, model=model, provider=provider)
    effective = effective_rates(catalog, model, rates)
    if effective is None and resolved.markup.kind != "override":
        raise UnknownModelPrice(model)
    if max_tokens is not None:
        completion = max_tokens
    elif effective is not None and effective.max_output_tokens is not None:
        completion = effective.max_output_tokens
    else:
        completion = _catalog_cap(catalog, model) or DEFAULT_MAX_OUTPUT_TOKENS
    if effective is None:
        # Only reachable for override rules, whose charge ignores the provider cost.
        cost = Decimal(0)
    else:
        with localcontext() as ctx:
            ctx.prec = EXACT_PRECISION
            cost = prompt_tokens * effective.input_per_token + completion * effective.output_per_token
    return _apply(catalog, resolved, cost, prompt_tokens, completion)


def effective_rates(catalog: Catalog, model: str, rates: ModelRates | None) -> ModelRates | None:
    """``rates`` with the catalog's ``models:`` entry for ``model`` laid over it."""
    entry = catalog.models.get(model)
    if entry is None:
        return rates
    cap = entry.max_output_tokens
    if entry.input_per_1m is not None and entry.output_per_1m is not None:
        if cap is None and rates is not None:
            cap = rates.max_output_tokens
        return ModelRates.per_million(entry.input_per_1m, entry.output_per_1m, cap)
    if rates is None:
        return None
    return ModelRates(rates.input_per_token, rates.output_per_token, cap or rates.max_output_tokens)


def _catalog_cap(catalog: Catalog, model: str) -> int | None:
    entry = catalog.models.get(model)
    return entry.max_output_tokens if entry is not None else None


def _apply(
    catalog: Catalog, resolved: ResolvedMarkup, cost: Decimal, input_tokens: int, output_tokens: int
) -> Priced:
    markup = resolved.markup
    usd = format_usd
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        if markup.kind == "multiplier":
            assert markup.value is not None  # guaranteed by Markup's validation
            charged = cost * markup.value
            text = f"{usd(cost)} x {format_decimal(markup.value)} = {usd(charged)}"
        elif markup.kind == "percentage":
            assert markup.value is not None
            # (100 + p) / 100 rather than 1 + p/100: one exact division by a power of ten.
            charged = cost * (100 + markup.value) / 100
            sign = "-" if markup.value < 0 else "+"
            text = f"{usd(cost)} {sign} {format_decimal(abs(markup.value))}% = {usd(charged)}"
        elif markup.kind == "fixed":
            assert markup.fee_usd is not None
            charged = cost + markup.fee_usd
            text = f"{usd(cost)} + fee {usd(markup.fee_usd)} = {usd(charged)}"
        elif markup.kind == "override":
            assert markup.input_per_1m is not None and markup.output_per_1m is not None
            charged = (
                input_tokens * markup.input_per_1m + output_tokens * markup.output_per_1m
            ) / TOKENS_PER_MILLION
            text = (
                f"{input_tokens} in x {usd(markup.input_per_1m)}/1M + "
                f"{output_tokens} out x {usd(markup.output_per_1m)}/1M = {usd(charged)}"
                f" (instead of provider cost {usd(cost)})"
            )
        else:
            charged = cost
            text = f"{usd(cost)} at cost"
        if markup.fee_usd and markup.kind != "fixed":
            charged += markup.fee_usd
            text += f", + fee {usd(markup.fee_usd)} = {usd(charged)}"
        if markup.min_charge_usd is not None and charged < markup.min_charge_usd:
            charged = markup.min_charge_usd
            text += f", raised to minimum {usd(markup.min_charge_usd)}"
    micro = usd_to_micro(charged, catalog.usd_per_credit)
    explain = f"{text} by {resolved.origin} = {format_decimal(micro_to_credits(micro))} credits"
    return Priced(
        micro_credits=micro,
        provider_cost_usd=cost,
        charged_usd=charged,
        rule_id=resolved.rule_id,
        kind=markup.kind,
        explain=explain,
    )


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")

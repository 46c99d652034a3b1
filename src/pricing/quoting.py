"""Turn a provider cost into a charge: ``price()`` after a call, ``quote()`` before it.

Both select the markup the same way (see :mod:`pricing.matching`), then run
the same steps in the same order (BYOK fee, or free model, or base markup;
then time window, volume discount, minimum charge: see :mod:`pricing.loading`
for the precedence), compute in exact ``Decimal`` arithmetic, and round once,
at the end, with :func:`pricing.money.usd_to_micro` (ceiling to the whole µcr).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from pricing.adjustments import select_time_window, select_volume_discount
from pricing.byok import byok_fee, select_byok_rule
from pricing.catalog import Catalog, Markup
from pricing.errors import UnknownModelPrice
from pricing.free_models import FREE_MODEL_RULE_ID, free_model_charge, is_free_model
from pricing.matching import ResolvedMarkup, resolve_markup
from pricing.money import (
    EXACT_PRECISION,
    as_decimal,
    format_decimal,
    format_usd,
    micro_to_credits,
    usd_to_micro,
)
from pricing.patterns import NO_GROUPS

TOKENS_PER_MILLION = 1_000_000

# The completion budget a quote assumes when neither the request nor any
# price list bounds it: the common output cap of current chat models.
DEFAULT_MAX_OUTPUT_TOKENS = 4096

ZERO = Decimal(0)


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
class PriceStep:
    """One step from provider cost to charge, in the order applied."""

    rule_id: str
    kind: str
    """A markup kind, or ``byok``, ``free_model``, ``time_window``, ``volume_discount``, ``min_charge``."""
    detail: str
    usd_after: Decimal
    """The charge in USD after this step, before rounding to µcr."""


@dataclass(frozen=True)
class Priced:
    """A charge and how it was reached."""

    micro_credits: int
    provider_cost_usd: Decimal
    charged_usd: Decimal
    """After every step; before rounding to µcr."""
    rule_id: str
    """The base rule: its id, ``tier:<code>:default``, ``passthrough``, ``free-model`` or ``byok:<id>``."""
    kind: str
    explain: str
    steps: tuple[PriceStep, ...] = ()

    @property
    def credits(self) -> Decimal:
        return micro_to_credits(self.micro_credits)


@dataclass(frozen=True)
class _Context:
    """What a call's price depends on besides its cost: passed in, never read from a clock or a database."""

    tier: str
    model: str
    provider: str | None
    now: datetime | None
    period_spend_usd: Decimal
    byok: bool
    byok_month_cost_usd: Decimal
    cache_hit: bool
    groups: frozenset[str]


def price(
    catalog: Catalog,
    *,
    tier: str,
    model: str,
    provider: str | None,
    cost_usd: Decimal,
    input_tokens: int,
    output_tokens: int,
    now: datetime | None = None,
    period_spend_usd: Decimal = ZERO,
    byok: bool = False,
    byok_month_cost_usd: Decimal = ZERO,
    cache_hit: bool = False,
    groups: frozenset[str] = NO_GROUPS,
) -> Priced:
    """Price a provider cost reported after a call (LiteLLM's ``response_cost``).

    ``now`` (aware) selects a time window (``None``: none applies);
    ``period_spend_usd`` is the account's provider spend in the current
    billing period before this call (volume discounts); ``byok`` marks a call
    made with the user's own provider key, ``byok_month_cost_usd`` the
    provider cost of the account's earlier BYOK calls this month; ``cache_hit``
    tells a zero cost from a cache from a free model; ``groups`` are the
    LiteLLM access groups of ``model``. Precedence: see :mod:`pricing.loading`.
    """
    cost = as_decimal(cost_usd, "cost_usd")
    if cost < 0:
        raise ValueError(f"cost_usd must not be negative, got {cost}")
    _check_count(input_tokens, "input_tokens")
    _check_count(output_tokens, "output_tokens")
    context = _context(
        tier, model, provider, now, period_spend_usd, byok, byok_month_cost_usd, cache_hit, groups
    )
    return _charge(catalog, context, cost, input_tokens, output_tokens)


def quote(
    catalog: Catalog,
    *,
    tier: str,
    model: str,
    provider: str | None,
    rates: ModelRates | None,
    prompt_tokens: int,
    max_tokens: int | None,
    now: datetime | None = None,
    period_spend_usd: Decimal = ZERO,
    byok: bool = False,
    byok_month_cost_usd: Decimal = ZERO,
    cache_hit: bool = False,
    groups: frozenset[str] = NO_GROUPS,
) -> Priced:
    """Price the worst case of a call before it is made, for a hold.

    The completion is assumed to run to ``max_tokens`` when the request gives
    it (even above the model's cap: the provider may reject it, but the hold
    covers what was asked), else to the model's ``max_output_tokens`` (the
    catalog's ``models:`` entry first, then ``rates``), else to
    :data:`DEFAULT_MAX_OUTPUT_TOKENS`. The catalog's rates for the model win
    over ``rates``; ``rates`` may be ``None`` for a model LiteLLM does not
    price, which is an error (``UnknownModelPrice``) unless the catalog, an
    ``override`` rule or a ``free_models`` pattern prices it.

    The context keywords mean what they mean for :func:`price`. A hold is
    only as safe as its context: a quote made with ``now`` inside a discount
    window may be lower than the charge if the call ends after the window.
    """
    _check_count(prompt_tokens, "prompt_tokens")
    if max_tokens is not None:
        _check_count(max_tokens, "max_tokens")
    context = _context(
        tier, model, provider, now, period_spend_usd, byok, byok_month_cost_usd, cache_hit, groups
    )
    resolved = resolve_markup(catalog, tier=tier, model=model, provider=provider)
    effective = effective_rates(catalog, model, rates)
    declared_free = catalog.free_models is not None and catalog.free_models.matches(model, groups)
    if effective is None and (byok or (resolved.markup.kind != "override" and not declared_free)):
        raise UnknownModelPrice(model)
    if max_tokens is not None:
        completion = max_tokens
    elif effective is not None and effective.max_output_tokens is not None:
        completion = effective.max_output_tokens
    else:
        completion = _catalog_cap(catalog, model) or DEFAULT_MAX_OUTPUT_TOKENS
    if effective is None:
        # Only reachable for override rules and declared free models, whose charge ignores the cost.
        cost = ZERO
    else:
        with localcontext() as ctx:
            ctx.prec = EXACT_PRECISION
            cost = prompt_tokens * effective.input_per_token + completion * effective.output_per_token
    return _charge(catalog, context, cost, prompt_tokens, completion, resolved)


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


def _context(
    tier: str,
    model: str,
    provider: str | None,
    now: datetime | None,
    period_spend_usd: Decimal,
    byok: bool,
    byok_month_cost_usd: Decimal,
    cache_hit: bool,
    groups: frozenset[str],
) -> _Context:
    if now is not None and (now.tzinfo is None or now.utcoffset() is None):
        raise ValueError(f"now must be an aware datetime, got {now.isoformat()}")
    spend = as_decimal(period_spend_usd, "period_spend_usd")
    month = as_decimal(byok_month_cost_usd, "byok_month_cost_usd")
    if spend < 0 or month < 0:
        raise ValueError("period_spend_usd and byok_month_cost_usd must not be negative")
    return _Context(tier, model, provider, now, spend, bool(byok), month, bool(cache_hit), frozenset(groups))


def _charge(
    catalog: Catalog,
    context: _Context,
    cost: Decimal,
    input_tokens: int,
    output_tokens: int,
    resolved: ResolvedMarkup | None = None,
) -> Priced:
    """Run the steps in their documented order and round once at the end."""
    tier = catalog.tier(context.tier)  # UnknownTier before anything else, as before
    if context.byok:
        rule = select_byok_rule(
            catalog.byok_rules, tier=context.tier, byok_allowed=tier.byok_allowed, provider=context.provider
        )
        fee = byok_fee(rule, provider_cost_usd=cost, month_cost_usd=context.byok_month_cost_usd)
        rule_id = f"byok:{rule.id}"
        micro = usd_to_micro(fee.usd, catalog.usd_per_credit)
        return Priced(
            micro_credits=micro,
            provider_cost_usd=cost,
            charged_usd=fee.usd,
            rule_id=rule_id,
            kind="byok",
            explain=f"{fee.detail} by BYOK rule {rule.id} = {_credits(micro)} credits",
            steps=(PriceStep(rule_id, "byok", fee.detail, fee.usd),),
        )

    if resolved is None:
        resolved = resolve_markup(catalog, tier=context.tier, model=context.model, provider=context.provider)
    free = catalog.free_models
    minimum: Decimal | None = None
    if free is not None and is_free_model(
        free,
        model=context.model,
        cost=cost,
        cache_hit=context.cache_hit,
        base_kind=resolved.markup.kind,
        groups=context.groups,
    ):
        charge = free_model_charge(free, cost=cost, input_tokens=input_tokens, output_tokens=output_tokens)
        charged, base_text = charge.usd, charge.detail
        base = PriceStep(FREE_MODEL_RULE_ID, "free_model", base_text, charged)
        origin, rule_id, kind = "free_models", FREE_MODEL_RULE_ID, "free_model"
    else:
        charged, base_text = markup_charge(resolved.markup, cost, input_tokens, output_tokens)
        base = PriceStep(resolved.rule_id, resolved.markup.kind, base_text, charged)
        origin, rule_id, kind = resolved.origin, resolved.rule_id, resolved.markup.kind
        minimum = resolved.markup.min_charge_usd
    steps = [base]

    usd = format_usd
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        window = select_time_window(
            catalog.time_windows,
            now=context.now,
            tier=context.tier,
            model=context.model,
            groups=context.groups,
        )
        if window is not None:
            charged = charged * window.multiplier
            text = f"x {format_decimal(window.multiplier)} in time window {window.id} = {usd(charged)}"
            steps.append(PriceStep(window.id, "time_window", text, charged))
        discount = select_volume_discount(
            catalog.volume_discounts,
            period_spend_usd=context.period_spend_usd,
            tier=context.tier,
            model=context.model,
            groups=context.groups,
        )
        if discount is not None:
            charged = charged * (100 - discount.discount_percent) / 100
            text = (
                f"- {format_decimal(discount.discount_percent)}% volume discount {discount.id} "
                f"(period spend {usd(context.period_spend_usd)}) = {usd(charged)}"
            )
            steps.append(PriceStep(discount.id, "volume_discount", text, charged))
    adjusted = len(steps) > 1
    raised = ""
    if minimum is not None and charged < minimum:
        charged = minimum
        raised = f"raised to minimum {usd(minimum)}"
        steps.append(PriceStep(rule_id, "min_charge", raised, charged))

    micro = usd_to_micro(charged, catalog.usd_per_credit)
    if adjusted:
        # Name the base rule next to its own step, since later steps have their own names.
        parts = [f"{base_text} by {origin}", *(step.detail for step in steps[1:])]
        explain = "; ".join(parts) + f" = {_credits(micro)} credits"
    else:
        # One rule did it all: the wording of catalogs without adjustments, unchanged.
        explain = base_text + (f", {raised}" if raised else "") + f" by {origin} = {_credits(micro)} credits"
    return Priced(
        micro_credits=micro,
        provider_cost_usd=cost,
        charged_usd=charged,
        rule_id=rule_id,
        kind=kind,
        explain=explain,
        steps=tuple(steps),
    )


def markup_charge(
    markup: Markup, cost: Decimal, input_tokens: int, output_tokens: int
) -> tuple[Decimal, str]:
    """The base markup and its per-call fee; the minimum is applied last, by the caller."""
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
    return charged, text


def _credits(micro: int) -> str:
    return format_decimal(micro_to_credits(micro))


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")

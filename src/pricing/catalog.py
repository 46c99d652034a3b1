"""The pricing catalog as validated, immutable pydantic models.

A :class:`Catalog` holds tiers (which models a plan may use), markup rules
(how a provider cost becomes a charge) and optional per-model prices. It is
normally built by :func:`pricing.loading.load_catalog` from YAML, whose
format is described there; building it in Python gives the same validation.

Every money field is a ``Decimal``. Numbers may be given as ints, strings or
``Decimal``; a Python ``float`` is converted through ``str()`` so ``0.1``
stays exactly ``0.1`` (the YAML loader never produces floats at all).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pricing.adjustments import TimeWindow, VolumeDiscount
from pricing.byok import ByokRule
from pricing.errors import UnknownTier
from pricing.fields import (
    Code,
    Integer,
    ModelPattern,
    Money,
    Name,
    NonNegativeInteger,
    NonNegativeMoney,
    PositiveInteger,
    PositiveMoney,
    non_negative,
    not_bool,
)
from pricing.free_models import FreeModels
from pricing.money import DEFAULT_USD_PER_CREDIT
from pricing.patterns import NO_GROUPS, matches_any
from pricing.tiers import MaxTokensPolicy, ModelQuota, Rollover, StripePriceIds

# Re-exported: these types were defined here before pricing.fields existed.
__all__ = [
    "MARKUP_KINDS",
    "PASSTHROUGH",
    "Catalog",
    "Code",
    "Integer",
    "Markup",
    "MarkupKind",
    "MarkupRule",
    "ModelPrice",
    "Money",
    "Name",
    "NonNegativeMoney",
    "PositiveMoney",
    "Tier",
]

MarkupKind = Literal["passthrough", "multiplier", "percentage", "fixed", "override"]
MARKUP_KINDS: tuple[str, ...] = get_args(MarkupKind)


class Markup(BaseModel):
    """How a provider cost becomes a charge.

    - ``passthrough``: the cost as is.
    - ``multiplier``: cost x ``value`` (``2.0`` doubles it); ``value`` > 0.
    - ``percentage``: cost x (1 + ``value``/100) (``10`` is +10 %); ``value`` > -100.
    - ``fixed``: cost + ``fee_usd`` per call.
    - ``override``: the operator's own prices per 1M tokens replace the cost.

    ``fee_usd`` may be added to any kind as a per-call fee, and
    ``min_charge_usd`` sets a floor under the result.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MarkupKind
    value: Money | None = Field(default=None, validate_default=True)
    fee_usd: Money | None = Field(default=None, validate_default=True)
    input_per_1m: Money | None = Field(default=None, validate_default=True)
    output_per_1m: Money | None = Field(default=None, validate_default=True)
    min_charge_usd: NonNegativeMoney | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, kind: object) -> object:
        if kind not in MARKUP_KINDS:
            raise ValueError(f"unknown markup kind {kind!r}; expected one of: {', '.join(MARKUP_KINDS)}")
        return kind

    # Cross-field checks are field validators (not a model validator) so that a
    # problem is reported at the field, e.g. ``rules[3].value``, not at the rule.
    # They read ``kind`` from info.data, which is absent when kind itself failed.

    @field_validator("value")
    @classmethod
    def _value_fits_kind(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("kind")
        if kind == "multiplier":
            if value is None:
                raise ValueError("required for kind 'multiplier': the factor (1.5 = +50%)")
            if value <= 0:
                raise ValueError(f"a multiplier must be > 0 (1.0 = no markup), got {value}")
        elif kind == "percentage":
            if value is None:
                raise ValueError("required for kind 'percentage': the percent added (10 = +10%)")
            if value <= -100:
                raise ValueError(f"a percentage must be > -100 (-100 would make calls free), got {value}")
        elif kind is not None and value is not None:
            raise ValueError(f"not used by kind {kind!r}; remove it")
        return value

    @field_validator("fee_usd")
    @classmethod
    def _fee_fits_kind(cls, fee: Decimal | None, info: ValidationInfo) -> Decimal | None:
        if fee is None:
            if info.data.get("kind") == "fixed":
                raise ValueError("required for kind 'fixed': the fee per call in USD")
            return None
        return non_negative(fee)

    @field_validator("input_per_1m", "output_per_1m")
    @classmethod
    def _rates_fit_kind(cls, rate: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("kind")
        if kind == "override" and rate is None:
            raise ValueError("required for kind 'override': USD per 1M tokens")
        if kind not in (None, "override") and rate is not None:
            raise ValueError(f"only used by kind 'override', not {kind!r}; remove it")
        return None if rate is None else non_negative(rate)


PASSTHROUGH = Markup(kind="passthrough")


class Tier(BaseModel):
    """A plan: which models it may use, its default markup, and its allowance and limits.

    Everything after ``default_markup`` is optional with a default that
    changes nothing, so catalogs written before these fields existed load as
    before. See :mod:`pricing.tiers` for their meaning.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Code
    name: Name = ""  # filled with the code when absent (see below)
    allowed_models: tuple[ModelPattern, ...]
    denied_models: tuple[ModelPattern, ...] = ()
    default_markup: Markup | None = None
    monthly_price_usd: NonNegativeMoney | None = None
    yearly_price_usd: NonNegativeMoney | None = None
    monthly_credits: NonNegativeMoney = Decimal(0)
    rollover: Rollover | None = None
    quotas: tuple[ModelQuota, ...] = ()
    monthly_api_calls: NonNegativeInteger | None = None
    max_tokens_per_request: PositiveInteger | None = None
    max_tokens_policy: MaxTokensPolicy = "reject"
    seats: PositiveInteger | None = None
    byok_allowed: bool = False
    stripe_price_ids: StripePriceIds = StripePriceIds()

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_code(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and "code" in data:
            return {**data, "name": data["code"]}
        return data

    def allows(self, model: str, groups: frozenset[str] = NO_GROUPS) -> bool:
        """Deny wins over allow; an empty ``allowed_models`` allows nothing.

        ``groups`` are the LiteLLM access groups ``model`` belongs to, for
        ``group:NAME`` entries.
        """
        if matches_any(self.denied_models, model, groups):
            return False
        return matches_any(self.allowed_models, model, groups)


_RULE_SELECTORS = frozenset({"id", "tier", "model", "provider", "priority", "active", "markup"})


class MarkupRule(BaseModel):
    """A markup that applies to calls matching its selectors (tier, model, provider).

    In YAML the markup's fields sit directly in the rule (``kind: multiplier``,
    ``value: "2"``); in Python they are grouped in :attr:`markup`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Code
    tier: Code | None = None
    model: Name | None = None
    provider: Name | None = None
    priority: Integer = 0
    active: bool = True
    """``false`` keeps the rule written down but never selects it (how a database row disables a rule)."""
    markup: Markup

    @model_validator(mode="before")
    @classmethod
    def _group_markup_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "markup" in data:
            return data
        rule = {key: value for key, value in data.items() if key in _RULE_SELECTORS}
        rule["markup"] = {key: value for key, value in data.items() if key not in _RULE_SELECTORS}
        return rule

    @property
    def kind(self) -> MarkupKind:
        return self.markup.kind


class ModelPrice(BaseModel):
    """The operator's own rates for a model, overriding LiteLLM's cost map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_1m: NonNegativeMoney | None = None
    output_per_1m: NonNegativeMoney | None = None
    max_output_tokens: Annotated[PositiveInt, BeforeValidator(not_bool)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ModelPrice:
        if (self.input_per_1m is None) != (self.output_per_1m is None):
            raise ValueError("set both input_per_1m and output_per_1m, or neither")
        if self.input_per_1m is None and self.max_output_tokens is None:
            raise ValueError("empty entry: give input_per_1m and output_per_1m and/or max_output_tokens")
        return self


class Catalog(BaseModel):
    """A validated pricing catalog. ``version`` identifies the source text it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd_per_credit: PositiveMoney = DEFAULT_USD_PER_CREDIT
    tiers: dict[str, Tier] = Field(default_factory=dict)
    rules: tuple[MarkupRule, ...] = ()
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    byok_rules: tuple[ByokRule, ...] = ()
    free_models: FreeModels | None = None
    time_windows: tuple[TimeWindow, ...] = ()
    volume_discounts: tuple[VolumeDiscount, ...] = ()
    version: str = ""
    source: str = "<python>"

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        # The loader reports these with file and line before building a
        # Catalog; this guards catalogs built directly in Python.
        for code, tier in self.tiers.items():
            if code != tier.code:
                raise ValueError(f"tiers[{code!r}] holds a tier with code {tier.code!r}")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            if rule.tier is not None and rule.tier not in self.tiers:
                raise ValueError(f"rule {rule.id!r} names unknown tier {rule.tier!r}")
        for section, entries in (
            ("byok_rules", self.byok_rules),
            ("time_windows", self.time_windows),
            ("volume_discounts", self.volume_discounts),
        ):
            ids: set[str] = set()
            for entry in entries:
                if entry.id in ids:
                    raise ValueError(f"duplicate {section} id {entry.id!r}")
                ids.add(entry.id)
                for code in entry.tiers:
                    if code not in self.tiers:
                        raise ValueError(f"{section} {entry.id!r} names unknown tier {code!r}")
                    if section == "byok_rules" and not self.tiers[code].byok_allowed:
                        raise ValueError(
                            f"byok_rules {entry.id!r} names tier {code!r}, which has byok_allowed false"
                        )
        return self

    def tier(self, code: str) -> Tier:
        try:
            return self.tiers[code]
        except KeyError:
            raise UnknownTier(code, tuple(self.tiers)) from None

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

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pricing.errors import UnknownTier
from pricing.money import DEFAULT_USD_PER_CREDIT
from pricing.patterns import matches_any

MarkupKind = Literal["passthrough", "multiplier", "percentage", "fixed", "override"]
MARKUP_KINDS: tuple[str, ...] = get_args(MarkupKind)


def _parse_decimal(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    if isinstance(value, float):
        value = Decimal(str(value))
    elif isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"expected a number, got {value!r}") from None
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"expected a finite number, got {value}")
    return value


def _not_bool(value: object) -> object:
    # YAML reads "yes"/"no" as booleans, and int() would quietly accept them.
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {str(value).lower()}")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError(f"must not start or end with spaces: {value!r}")
    return value


def _code(value: str) -> str:
    _name(value)
    # ':' separates the parts of a rule id such as "tier:pro:default".
    if any(char.isspace() for char in value) or ":" in value:
        raise ValueError(f"must not contain spaces or ':', got {value!r}")
    return value


Money = Annotated[Decimal, BeforeValidator(_parse_decimal)]
NonNegativeMoney = Annotated[Money, AfterValidator(_non_negative)]
PositiveMoney = Annotated[Money, AfterValidator(_positive)]
Integer = Annotated[int, BeforeValidator(_not_bool)]
Name = Annotated[str, AfterValidator(_name)]
Code = Annotated[str, AfterValidator(_code)]


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
        return _non_negative(fee)

    @field_validator("input_per_1m", "output_per_1m")
    @classmethod
    def _rates_fit_kind(cls, rate: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("kind")
        if kind == "override" and rate is None:
            raise ValueError("required for kind 'override': USD per 1M tokens")
        if kind not in (None, "override") and rate is not None:
            raise ValueError(f"only used by kind 'override', not {kind!r}; remove it")
        return None if rate is None else _non_negative(rate)


PASSTHROUGH = Markup(kind="passthrough")


class Tier(BaseModel):
    """A plan: which models it may use and its default markup."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Code
    name: Name = ""  # filled with the code when absent (see below)
    allowed_models: tuple[Name, ...]
    denied_models: tuple[Name, ...] = ()
    default_markup: Markup | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_code(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and "code" in data:
            return {**data, "name": data["code"]}
        return data

    def allows(self, model: str) -> bool:
        """Deny wins over allow; an empty ``allowed_models`` allows nothing."""
        if matches_any(self.denied_models, model):
            return False
        return matches_any(self.allowed_models, model)


_RULE_SELECTORS = frozenset({"id", "tier", "model", "provider", "priority", "markup"})


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
    max_output_tokens: Annotated[PositiveInt, BeforeValidator(_not_bool)] | None = None

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
        return self

    def tier(self, code: str) -> Tier:
        try:
            return self.tiers[code]
        except KeyError:
            raise UnknownTier(code, tuple(self.tiers)) from None

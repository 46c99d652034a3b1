"""Validated field types shared by every part of the catalog.

They live apart from the catalog's models so that the sections in their own
modules (tiers, BYOK rules, free models, price adjustments) can use the same
number and name rules without importing the catalog itself.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from pricing.patterns import GROUP_PREFIX


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


def not_bool(value: object) -> object:
    # YAML reads "yes"/"no" as booleans, and int() would quietly accept them.
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {str(value).lower()}")
    return value


def non_negative(value: Decimal) -> Decimal:
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
NonNegativeMoney = Annotated[Money, AfterValidator(non_negative)]
PositiveMoney = Annotated[Money, AfterValidator(_positive)]
Integer = Annotated[int, BeforeValidator(not_bool)]
Name = Annotated[str, AfterValidator(_name)]
Code = Annotated[str, AfterValidator(_code)]


def _positive_int(value: int) -> int:
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def _non_negative_int(value: int) -> int:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _pattern(value: str) -> str:
    _name(value)
    # "group:NAME" names a LiteLLM access group (see pricing.patterns).
    if value.startswith(GROUP_PREFIX) and not value[len(GROUP_PREFIX) :].strip():
        raise ValueError(f"an access group needs a name after {GROUP_PREFIX!r}, got {value!r}")
    return value


PositiveInteger = Annotated[Integer, AfterValidator(_positive_int)]
NonNegativeInteger = Annotated[Integer, AfterValidator(_non_negative_int)]
ModelPattern = Annotated[str, AfterValidator(_pattern)]

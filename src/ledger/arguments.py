"""Checks of the arguments the ``Ledger`` facade takes, before any transaction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pricing.errors import InvalidOperation

from .types import UsageRecord, storable_text


def aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InvalidOperation("naive datetime given to the ledger; pass a timezone-aware one")
    return now


def nonnegative(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOperation(f"{name} must be a whole number of micro-credits >= 0, got {value!r}")


def positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidOperation(f"{name} must be a whole number of micro-credits > 0, got {value!r}")


def check_charge(micro: int, usage: UsageRecord) -> None:
    nonnegative("charge", micro)
    if not isinstance(usage.provider_cost_usd, Decimal):
        raise InvalidOperation("provider_cost_usd must be a Decimal (convert the float once, at the edge)")


def external_text(name: str, value: str) -> None:
    if not storable_text(value):
        raise InvalidOperation(
            f"{name} {value!r} holds a NUL character or a lone surrogate, which no database stores"
        )

"""Models the provider does not charge for, priced by one catalog-wide rule.

    free_models:
      patterns: ["openrouter/*:free"]   # names, globs or group:NAME; matched before any markup rule
      kind: per_1k_tokens               # passthrough (charge the reported cost, normally 0)
                                        # | per_1k_tokens (a small fee per 1000 tokens in + out)
      fee_per_1k_tokens_usd: "0.0001"   # required for per_1k_tokens

Besides the patterns, a call whose reported provider cost is exactly 0 is a
free-model call, unless it was a cache hit (LiteLLM reports 0 for those too,
and a cache hit of a paid model is not a free model) or its markup rule is an
``override``, whose list price exists precisely for models LiteLLM thinks cost
nothing (self-hosted ones). Without a ``free_models`` section nothing is
treated as free and zero-cost calls go through the markup rules as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pricing.fields import ModelPattern, NonNegativeMoney
from pricing.money import EXACT_PRECISION, format_usd
from pricing.patterns import NO_GROUPS, matches_any

FreeModelKind = Literal["passthrough", "per_1k_tokens"]

FREE_MODEL_RULE_ID = "free-model"


class FreeModels(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    patterns: tuple[ModelPattern, ...] = ()
    kind: FreeModelKind = "passthrough"
    # validate_default: the kind check below must also run when the fee is left out.
    fee_per_1k_tokens_usd: NonNegativeMoney | None = Field(default=None, validate_default=True)

    @field_validator("fee_per_1k_tokens_usd")
    @classmethod
    def _fee_fits_kind(cls, fee: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("kind")
        if kind == "per_1k_tokens" and fee is None:
            raise ValueError("required for kind 'per_1k_tokens': USD per 1000 tokens")
        if kind == "passthrough" and fee is not None:
            raise ValueError("only used by kind 'per_1k_tokens'; remove it")
        return fee

    def matches(self, model: str, groups: frozenset[str] = NO_GROUPS) -> bool:
        return matches_any(self.patterns, model, groups)


def is_free_model(
    rule: FreeModels,
    *,
    model: str,
    cost: Decimal,
    cache_hit: bool,
    base_kind: str,
    groups: frozenset[str] = NO_GROUPS,
) -> bool:
    """Whether ``rule`` prices this call (see the module docstring); ``base_kind`` is the markup's kind."""
    if rule.matches(model, groups):
        return True
    # A zero cost from a cache hit is not a free model, and an override rule
    # exists precisely to price models LiteLLM reports as costing nothing.
    return cost == 0 and not cache_hit and base_kind != "override"


@dataclass(frozen=True)
class FreeModelCharge:
    usd: Decimal
    detail: str


def free_model_charge(
    rule: FreeModels, *, cost: Decimal, input_tokens: int, output_tokens: int
) -> FreeModelCharge:
    if rule.kind == "passthrough":
        return FreeModelCharge(cost, f"free model: {format_usd(cost)} at cost")
    assert rule.fee_per_1k_tokens_usd is not None  # guaranteed by FreeModels' validation
    tokens = input_tokens + output_tokens
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        usd = tokens * rule.fee_per_1k_tokens_usd / 1000
    return FreeModelCharge(
        usd, f"free model: {tokens} tokens x {format_usd(rule.fee_per_1k_tokens_usd)}/1K = {format_usd(usd)}"
    )

"""The parts of a tier beyond model access: allocation, rollover, quotas, Stripe prices.

These are plain, validated settings. The ledger acts on them (it grants the
monthly allocation, carries unused credits over, counts quota use); the pure
arithmetic it needs is here so every caller computes it the same way.

    tiers:
      - code: pro
        monthly_price_usd: "20"        # optional, for display and checkout
        yearly_price_usd: "200"        # optional
        monthly_credits: "10000"       # credits granted each billing period (default 0)
        rollover:                      # optional; absent = unused credits expire at period end
          max_fraction: "0.5"          # share of the unused allocation carried over (default 1)
          max_credits: null            # cap on the carried amount; null = no cap
          expires_after_days: null     # null = the carried credits expire at the end of the next period
        quotas:                        # optional call limits per model pattern
          - {model: "gpt-3.5-turbo", per_day: 100, per_month: null}
        monthly_api_calls: 100000      # optional cap on calls per billing period
        max_tokens_per_request: 4096   # optional cap on a request's max_tokens
        max_tokens_policy: reject      # reject (400) | clamp (lower it to the cap)
        seats: 5                       # optional, informational for team plans
        byok_allowed: true             # may bring their own provider keys (default false)
        stripe_price_ids: {monthly: price_123, yearly: null}
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from pricing.fields import ModelPattern, Name, NonNegativeMoney, PositiveInteger
from pricing.money import EXACT_PRECISION

MaxTokensPolicy = Literal["reject", "clamp"]


class Rollover(BaseModel):
    """How much of a period's unused allocation survives into the next period."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_fraction: NonNegativeMoney = Decimal(1)
    max_credits: NonNegativeMoney | None = None
    expires_after_days: PositiveInteger | None = None

    @model_validator(mode="after")
    def _fraction_at_most_one(self) -> Rollover:
        if self.max_fraction > 1:
            raise ValueError(
                f"max_fraction is a share of the unused credits, at most 1; got {self.max_fraction}"
            )
        return self

    def carried_credits(self, unused_credits: Decimal) -> Decimal:
        """Credits carried into the next period out of ``unused_credits`` of this one's allocation."""
        if unused_credits <= 0:
            return Decimal(0)
        with localcontext() as ctx:
            ctx.prec = EXACT_PRECISION
            carried = unused_credits * self.max_fraction
        if self.max_credits is not None:
            carried = min(carried, self.max_credits)
        return carried

    def expires_at(self, period_end: datetime, next_period_end: datetime) -> datetime:
        """When carried credits expire: ``expires_after_days`` after the period ends, else with the next one."""
        if self.expires_after_days is None:
            return next_period_end
        return period_end + timedelta(days=self.expires_after_days)


class ModelQuota(BaseModel):
    """A cap on calls to the models ``model`` matches, per UTC day and/or per billing period.

    A glob is one shared pool: ``gpt-4*`` with ``per_day: 100`` allows 100 calls
    a day across every matching model, not 100 each.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelPattern
    per_day: PositiveInteger | None = None
    per_month: PositiveInteger | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> ModelQuota:
        if self.per_day is None and self.per_month is None:
            raise ValueError("set per_day and/or per_month (a quota without a limit limits nothing)")
        return self


class StripePriceIds(BaseModel):
    """The Stripe Price ids a checkout uses for this tier; null = not sold that way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    monthly: Name | None = None
    yearly: Name | None = None

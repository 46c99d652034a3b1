"""Bring-your-own-key calls: the provider bills the user, the operator charges a fee.

    byok_rules:
      - id: byok-standard          # required, unique
        provider: "*"              # LiteLLM provider name or glob; "*" = any
        fee_percent: "5"           # percent of the provider cost above the allowance
        min_charge_usd: "0.001"    # floor of a fee that is not zero (default 0)
        free_allowance_usd_per_month: "5"   # provider cost per month free of fees (default 0)
        tiers: []                  # tier codes; [] = every tier with byok_allowed: true
        priority: 0                # higher wins among matching rules, then the earlier rule
        active: true               # false keeps the rule in the file but unused

The fee of a call is ``fee_percent`` % of the part of its provider cost that
lies above what is left of the month's free allowance, given the provider cost
of the account's earlier BYOK calls this month. A fee above zero is raised to
``min_charge_usd``; a call wholly inside the allowance costs nothing. So with
5 %, a $0.001 minimum and a $5 allowance: $0.005 with $4 used is free; $2 with
$4 used pays 5 % of $1 = $0.05; $0.005 with the allowance used up pays $0.001.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from pydantic import BaseModel, ConfigDict, model_validator

from pricing.errors import ByokNotAllowed
from pricing.fields import Code, Integer, Name, NonNegativeMoney
from pricing.money import EXACT_PRECISION, format_decimal, format_usd
from pricing.patterns import matches


class ByokRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Code
    provider: Name = "*"
    fee_percent: NonNegativeMoney
    min_charge_usd: NonNegativeMoney = Decimal(0)
    free_allowance_usd_per_month: NonNegativeMoney = Decimal(0)
    tiers: tuple[Code, ...] = ()
    priority: Integer = 0
    active: bool = True

    @model_validator(mode="after")
    def _percent_at_most_100(self) -> ByokRule:
        if self.fee_percent > 100:
            raise ValueError(
                f"fee_percent is a share of the provider cost, at most 100; got {self.fee_percent}"
            )
        return self

    def applies_to(self, tier: str, provider: str | None) -> bool:
        if not self.active:
            return False
        if self.tiers and tier not in self.tiers:
            return False
        # An unknown provider only matches a rule that accepts any provider.
        return self.provider == "*" if provider is None else matches(self.provider, provider)


@dataclass(frozen=True)
class ByokFee:
    usd: Decimal
    detail: str


def select_byok_rule(
    rules: tuple[ByokRule, ...], *, tier: str, byok_allowed: bool, provider: str | None
) -> ByokRule:
    """The rule pricing a BYOK call: highest ``priority``, then the earlier one. Raises ``ByokNotAllowed``."""
    if not byok_allowed:
        raise ByokNotAllowed(tier, provider, reason="plan")
    best: ByokRule | None = None
    for rule in rules:
        if rule.applies_to(tier, provider) and (best is None or rule.priority > best.priority):
            best = rule
    if best is None:
        raise ByokNotAllowed(tier, provider, reason="provider")
    return best


def byok_fee(rule: ByokRule, *, provider_cost_usd: Decimal, month_cost_usd: Decimal) -> ByokFee:
    """The fee for one BYOK call (see the module docstring for the rule)."""
    usd = format_usd
    with localcontext() as ctx:
        ctx.prec = EXACT_PRECISION
        allowance_left = max(Decimal(0), rule.free_allowance_usd_per_month - max(Decimal(0), month_cost_usd))
        billable = max(Decimal(0), provider_cost_usd - allowance_left)
        fee = billable * rule.fee_percent / 100
    if rule.free_allowance_usd_per_month > 0:
        text = (
            f"BYOK: provider cost {usd(provider_cost_usd)}, {usd(allowance_left)} of the "
            f"{usd(rule.free_allowance_usd_per_month)} monthly allowance left, "
            f"{format_decimal(rule.fee_percent)}% of {usd(billable)} = {usd(fee)}"
        )
    else:
        text = f"BYOK: {format_decimal(rule.fee_percent)}% of provider cost {usd(provider_cost_usd)} = {usd(fee)}"
    if fee > 0 and fee < rule.min_charge_usd:
        fee = rule.min_charge_usd
        text += f", raised to minimum {usd(rule.min_charge_usd)}"
    return ByokFee(fee, text)

"""What a caller may use and at what price: the view behind ``GET /credits/prices``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledger import Account
from pricing import QuotaCheck, Tier, price_list, quota_checks

from .gate import CreditGate


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


async def price_listing(gate: CreditGate, account: Account) -> dict[str, Any]:
    catalog = gate.catalogs.current
    tier = catalog.tier(account.tier)
    names = gate.deployments.model_groups()
    rates = {}
    providers: dict[str, str | None] = {}
    groups = {}
    for name in names:
        # the dearest deployment of a group is the price a caller may pay
        dearest = max(
            gate.deployments.deployments(name),
            key=lambda d: (d.rates.output_per_token, d.rates.input_per_token),
        )
        rates[name] = dearest.rates
        providers[name] = dearest.provider
        groups[name] = gate.deployments.groups(name)
    views = price_list(catalog, account.tier, rates, groups=groups, providers=providers)
    quotas = await _quota_status(gate, account, tier)
    return {
        "quotas": quotas,
        "tier": {"code": tier.code, "name": tier.name},
        "catalog_version": catalog.version,
        "usd_per_credit": str(catalog.usd_per_credit),
        "models": [
            {
                "model": v.model,
                "input_credits_per_1m": _num(v.input_credits_per_1m),
                "output_credits_per_1m": _num(v.output_credits_per_1m),
                "fee_per_call_credits": _num(v.fee_per_call_credits),
                "min_charge_credits": _num(v.min_charge_credits)
                if v.min_charge_credits is not None
                else None,
                "rule": v.rule_id,
            }
            for v in views
        ],
    }


async def _quota_status(gate: CreditGate, account: Account, tier: Tier) -> list[dict[str, Any]]:
    now = gate.clock()
    anchor = account.period_anchor or account.created_at
    checks: dict[str, QuotaCheck] = {}
    # each quota's own pattern names its pool; the monthly call limit comes with any of them
    for pattern in [q.model for q in tier.quotas] or ["*"]:
        for check in quota_checks(tier, pattern, anchor=anchor, now=now):
            checks.setdefault(check.scope, check)
    listed = list(checks.values())
    used = await gate.run(gate.ledger.quota_usage, account.id, listed) if listed else []
    return [
        {
            "quota": c.what,
            "limit": c.limit,
            "used": n,
            "left": max(0, c.limit - n),
            "resets_at": c.window_end.isoformat(),
        }
        for c, n in zip(listed, used, strict=True)
    ]

"""Billing periods: each account's own cycle, allocated once per period.

At every period start the tier's monthly allocation is granted (idempotent per
account and period: the ledger keys it by ``alloc:{account}:{period_start}``),
the last period's allocation expires and the tier's rollover rule carries part
of it over. Scheduled tier changes and expired grants are applied in the same
pass. The pass runs in the proxy as a background task under a database lease,
so one replica at a time does it; ``credits-admin periods run`` runs it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ledger import Account, Ledger
from pricing import Catalog, Tier, credits_to_micro, period_bounds
from pricing.errors import UnknownTier

log = logging.getLogger("credits.periods")

JOB_NAME = "credits-periods"
_PAGE = 500


@dataclass(frozen=True, slots=True)
class PeriodRun:
    accounts: int = 0
    allocated: int = 0
    rolled_over_micro: int = 0
    tier_changes: int = 0
    grants_expired: int = 0


def allocate_account(ledger: Ledger, catalog: Catalog, account: Account, now: datetime) -> tuple[bool, int]:
    """Start the account's current period if that has not happened yet: (newly allocated, µcr rolled over)."""
    try:
        tier: Tier = catalog.tier(account.tier)
    except UnknownTier:
        log.error("account %s is on tier %r, which the catalog does not have", account.label, account.tier)
        return False, 0
    if not tier.monthly_credits:
        return False, 0
    anchor = account.period_anchor or account.created_at
    start, end = period_bounds(anchor, now)
    rollover = tier.rollover
    result = ledger.allocate_period(
        account.id,
        period_start=start,
        period_end=end,
        allocation_micro=credits_to_micro(tier.monthly_credits),
        rollover_fraction=rollover.max_fraction if rollover else Decimal(0),
        rollover_cap_micro=(
            credits_to_micro(rollover.max_credits) if rollover and rollover.max_credits is not None else None
        ),
        rollover_expires_at=rollover.expires_at(start, end) if rollover else None,
    )
    return (not result.already_done), result.rolled_over


def run_periods(ledger: Ledger, catalog: Catalog, now: datetime | None = None) -> PeriodRun:
    """One pass over every active account; safe to run any number of times."""
    now = now or datetime.now(UTC)
    tier_changes = ledger.apply_due_tier_changes(now)
    accounts = allocated = rolled = 0
    after = 0
    while True:
        page = ledger.list_accounts(status="active", after_id=after, limit=_PAGE)
        if not page:
            break
        for account in page:
            accounts += 1
            done, carried = allocate_account(ledger, catalog, account, now)
            allocated += done
            rolled += carried
        after = page[-1].id
    expired = ledger.expire_grants(now)
    return PeriodRun(accounts, allocated, rolled, tier_changes, expired)


def run_periods_exclusive(
    ledger: Ledger, catalog: Catalog, now: datetime | None = None, lease: timedelta = timedelta(minutes=5)
) -> PeriodRun | None:
    """The pass, unless another replica holds the lease (then None)."""
    return ledger.run_exclusive(
        JOB_NAME, lambda: run_periods(ledger, catalog, now), lease_seconds=lease.total_seconds()
    )


def prorated_upgrade_micro(old: Tier, new: Tier, period: tuple[datetime, datetime], now: datetime) -> int:
    """Extra allocation for an immediate upgrade: the difference, for the part of the period left."""
    gained = (new.monthly_credits or Decimal(0)) - (old.monthly_credits or Decimal(0))
    start, end = period
    if gained <= 0 or now >= end:
        return 0
    left = Decimal((end - now).total_seconds()) / Decimal((end - start).total_seconds())
    # whole micro-credits, rounded down: the customer is never promised a fraction we cannot grant
    return int(credits_to_micro(gained) * left)

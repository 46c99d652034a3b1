"""Domain types the ledger hands to callers.

Frozen dataclasses, never ORM objects: a caller can keep them after the
transaction is gone, pass them between threads and compare them by value.
All amounts are integer micro-credits (µcr); all datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

MICRO_PER_CREDIT: Final = 1_000_000

AccountKind = Literal["team", "user", "end_user", "key"]
AccountStatus = Literal["active", "suspended", "past_due", "closed"]
HoldStatus = Literal["open", "settled", "voided", "expired"]
EntryKind = Literal["grant", "hold", "release", "charge", "expire", "refund", "transfer", "adjustment"]

ACCOUNT_KINDS: Final[tuple[str, ...]] = ("team", "user", "end_user", "key")
ACCOUNT_STATUSES: Final[tuple[str, ...]] = ("active", "suspended", "past_due", "closed")
HOLD_STATUSES: Final[tuple[str, ...]] = ("open", "settled", "voided", "expired")
ENTRY_KINDS: Final[tuple[str, ...]] = (
    "grant",
    "hold",
    "release",
    "charge",
    "expire",
    "refund",
    "transfer",
    "adjustment",
)


def micro_to_credit_str(micro: int) -> str:
    """µcr as a plain decimal string of credits (``1500000`` → ``"1.5"``), for messages."""
    value = (Decimal(micro) / MICRO_PER_CREDIT).normalize()
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    kind: str
    external_id: str
    tier: str
    status: str
    overdraft_limit: int
    balance: int
    held: int
    debt: int
    created_at: datetime
    updated_at: datetime

    @property
    def available(self) -> int:
        return self.balance - self.held

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.external_id}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    key_hash: str
    key_prefix: str
    account_id: int
    user_id: str | None
    team_id: str | None
    alias: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly issued key: ``plaintext`` exists only here, the database keeps its hash."""

    plaintext: str
    key: ApiKey

    def __repr__(self) -> str:
        # Keeps the secret out of logs and tracebacks that print locals.
        return f"IssuedKey(key={self.key!r}, plaintext='{self.key.key_prefix}…')"


@dataclass(frozen=True, slots=True)
class Grant:
    id: int
    account_id: int
    source: str
    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    external_ref: str | None
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: int
    amount: int
    status: str
    expires_at: datetime
    reference: str
    charged: int | None
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: int
    balance: int
    held: int
    available: int
    overdraft_limit: int
    debt: int


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    account_id: int
    kind: str
    amount: int
    held_delta: int
    grant_id: int | None
    hold_id: str | None
    reason: str
    reference: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What the caller knows about a served call; ``settle`` stores it as a usage event."""

    model: str = ""
    provider: str = ""
    call_type: str = ""
    api_key_hash: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    end_user_id: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    provider_cost_usd: Decimal = Decimal(0)
    markup_rule: str | None = None
    catalog_version: str | None = None
    cache_hit: bool = False
    stream: bool = False


@dataclass(frozen=True, slots=True)
class UsageEvent:
    id: int
    hold_id: str
    account_id: int
    api_key_hash: str | None
    user_id: str | None
    team_id: str | None
    end_user_id: str | None
    model: str
    provider: str
    call_type: str
    tokens_in: int
    tokens_out: int
    provider_cost_usd: Decimal
    markup_rule: str | None
    catalog_version: str | None
    charged: int
    cache_hit: bool
    stream: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Settlement:
    """The one result of settling a hold; settling again returns an equal value.

    ``late`` is true when the hold had already been voided or had expired before the
    charge arrived (the call was served anyway, so it is charged without a release).
    """

    hold_id: str
    account_id: int
    held: int
    charged: int
    usage_event_id: int
    late: bool
    settled_at: datetime

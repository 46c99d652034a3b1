"""Domain types the ledger hands to callers.

Frozen dataclasses, never ORM objects: a caller can keep them after the
transaction is gone, pass them between threads and compare them by value.
All amounts are integer micro-credits (µcr); all datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal, Protocol

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

MODEL_ACCESS_EFFECTS: Final[tuple[str, ...]] = ("allow", "deny")


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
    # Defaults keep code that builds an Account by hand (tests, fakes) working.
    period_anchor: datetime | None = None
    byok: bool = False
    pending_tier: str | None = None
    pending_tier_at: datetime | None = None

    @property
    def anchor(self) -> datetime:
        """The start of billing periods: ``period_anchor``, else the account's creation."""
        return self.period_anchor or self.created_at

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
    byok: bool = False


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
    """A hold. ``balance_after`` / ``available_after`` are the account's balance and
    available (balance - held) right after ``Ledger.hold`` placed it, read from the same
    UPDATE; other methods (``get_hold``) leave them 0. They do not take part in equality.
    """

    id: str
    account_id: int
    amount: int
    status: str
    expires_at: datetime
    reference: str
    charged: int | None
    created_at: datetime
    resolved_at: datetime | None
    balance_after: int = field(default=0, compare=False)
    available_after: int = field(default=0, compare=False)
    # Set when the call's credit was lent from an escrow hold (``ledger.escrow``) rather
    # than held on its own: ``id`` is then the call's id, and the escrow is charged.
    escrow_hold_id: str | None = field(default=None, compare=False)


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
    byok: bool = False

    def __post_init__(self) -> None:
        # These texts come from the request (an end user id is the client's ``user``
        # field under LiteLLM's own keys) and only describe the call, while the charge
        # they travel with must land: text no database column can hold (a NUL, a lone
        # surrogate) is stored with U+FFFD in its place, instead of failing the charge's
        # every write (a journal batch retried forever behind it).
        for value in _usage_texts(self):
            if value and ("\0" in value or not value.isascii()):
                break
        else:
            return  # plain ASCII without NUL: every call but a few
        for name in _USAGE_TEXTS:
            value = getattr(self, name)
            if value:
                object.__setattr__(self, name, storable(value))


_USAGE_TEXTS: Final = (
    "model",
    "provider",
    "call_type",
    "api_key_hash",
    "user_id",
    "team_id",
    "end_user_id",
    "markup_rule",
    "catalog_version",
)
_usage_texts = operator.attrgetter(*_USAGE_TEXTS)
_UNSTORABLE = re.compile("[\0\ud800-\udfff]")


def storable_text(value: str) -> bool:
    """Whether ``value`` holds no NUL and no lone surrogate: text every database the
    ledger runs on stores as it is."""
    return _UNSTORABLE.search(value) is None


def storable(value: str) -> str:
    """``value`` with each NUL and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", value)


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
    byok: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    """The one result of settling a hold; settling again returns an equal value.

    ``late`` is true when the hold had already been voided or had expired before the
    charge arrived (the call was served anyway, so it is charged without a release).

    ``balance_after`` / ``available_after`` (balance - held) are the account's figures
    right after this settle, from the same UPDATE that wrote them, so a caller needs no
    ``balance()`` read for its response headers. A repeated settle returns the account's
    figures as they are at the time of the repeat. They do not take part in equality:
    a repeat still compares equal to the first result.
    """

    hold_id: str
    account_id: int
    held: int
    charged: int
    usage_event_id: int
    late: bool
    settled_at: datetime
    balance_after: int = field(default=0, compare=False)
    available_after: int = field(default=0, compare=False)
    # True when the charge is durable in the settle journal (``ledger.journal``) but not
    # yet applied to the database: ``usage_event_id`` is then 0 and the figures estimates.
    journaled: bool = field(default=False, compare=False)


class QuotaLike(Protocol):
    """Anything that describes one quota check (``QuotaSpec``, pricing's ``QuotaCheck``)."""

    @property
    def scope(self) -> str: ...
    @property
    def window_start(self) -> datetime: ...
    @property
    def window_end(self) -> datetime: ...
    @property
    def limit(self) -> int: ...
    @property
    def what(self) -> str: ...


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """One counter to consume: at most ``limit`` calls in ``[window_start, window_end)``.

    ``scope`` names the counter (``"model:gpt-4o"``, ``"calls"``); ``window_start`` tells
    its windows apart; ``window_end`` is when it resets; ``what`` is for the error message.
    """

    scope: str
    window_start: datetime
    window_end: datetime
    limit: int
    what: str


@dataclass(frozen=True, slots=True)
class PeriodResult:
    """What ``allocate_period`` did (or, with ``already_done``, had done the first time)."""

    granted: int
    rolled_over: int
    expired: int
    already_done: bool


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums over an account's usage events in a time range."""

    provider_cost_usd: Decimal
    byok_provider_cost_usd: Decimal
    charged: int
    calls: int


@dataclass(frozen=True, slots=True)
class Transfer:
    """Credit moved between accounts; a repeat with the same reference returns an equal value.

    ``debits`` are the source's entries (one per grant burned, plus one for any part
    that became debt); ``credit`` is the target's entry for its new ``transfer`` grant.
    """

    reference: str
    from_account_id: int
    to_account_id: int
    amount: int
    debits: tuple[Entry, ...]
    credit: Entry
    grant: Grant


@dataclass(frozen=True, slots=True)
class CatalogRowsSnapshot:
    """The catalog as stored rows; ``stamp`` changes whenever any of them changes."""

    tiers: list[dict[str, Any]]
    tier_model_access: list[dict[str, Any]]
    pricing_rules: list[dict[str, Any]]
    stamp: str

"""Settings of the plugin, read from ``CREDITS_*`` environment variables.

Defaults work with zero services: a SQLite file in the working directory, the
example pricing catalog shipped with the package, no Redis. A wrong value
fails at start with ``SettingsError`` naming the variable.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ledger.journal import FAST_SYNC_SECONDS, LINGER_SECONDS
from pricing.errors import SettingsError

ENV_PREFIX = "CREDITS_"
IDENTITY_KINDS = ("team", "user", "end_user", "key")
DEFAULT_PRICING_FILE = Path(__file__).with_name("default_pricing.yaml")


class UnknownAccountPolicy(StrEnum):
    PROVISION = "provision"
    REFUSE = "refuse"


class TierChangeTiming(StrEnum):
    IMMEDIATE = "immediate"
    PERIOD_END = "period_end"


class OutagePolicy(StrEnum):
    FAIL_CLOSED = "fail_closed"
    FAIL_OPEN = "fail_open"


class SettleMode(StrEnum):
    DIRECT = "direct"
    JOURNAL = "journal"


class EscrowMode(StrEnum):
    OFF = "off"
    LOCAL = "local"  # one escrow per proxy process, in its memory
    REDIS = "redis"  # one escrow per account, shared by every replica through Redis


class CacheHitCharge(StrEnum):
    FREE = "free"
    FULL = "full"


class CreditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = "sqlite:///./credits.db"
    pricing_file: Path = DEFAULT_PRICING_FILE
    redis_url: str | None = None
    # who pays, tried in this order; the first identity the key carries wins
    account_order: Annotated[tuple[str, ...], NoDecode] = ("team", "user", "key")
    unknown_accounts: UnknownAccountPolicy = UnknownAccountPolicy.PROVISION
    default_tier: str = "free"
    welcome_credits: Decimal = Field(default=Decimal(0), ge=0)
    cache_hit_charge: CacheHitCharge = CacheHitCharge.FREE
    hold_ttl_seconds: int = Field(default=900, gt=0)
    # a hold for a call whose worst case LiteLLM's cost map cannot give (an unknown
    # image model, an audio file of unknown length): USD per unit of the call
    fallback_hold_usd: Decimal = Field(default=Decimal("0.10"), gt=0)
    catalog_reload_seconds: float = Field(default=2.0, gt=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    # how often the billing-period pass (allocations, rollover, scheduled tier changes)
    # runs in the proxy; 0 turns it off (run `credits-admin periods run` from cron instead)
    period_job_seconds: float = Field(default=60.0, ge=0)
    tier_change: TierChangeTiming = TierChangeTiming.IMMEDIATE
    outbox_path: Path = Path("./credits-outbox.jsonl")
    # the ledger unreachable: refuse calls (503 billing_unavailable), or serve known
    # accounts up to this many credits of calls not yet written, charged when it is back
    outage_policy: OutagePolicy = OutagePolicy.FAIL_CLOSED
    fail_open_exposure_credits: Decimal = Field(default=Decimal(100), ge=0)
    # holds and settles from concurrent calls share one commit (a writer thread per
    # proxy); a call still returns only after the commit that holds its write
    group_commit: bool = False
    # journal (the default): a charge is fsync'd to a local journal before the response
    # ends and applied to the ledger in batches; direct: committed to the ledger there,
    # which costs a database commit on every response (docs/BENCHMARKS.md)
    settle_mode: SettleMode = SettleMode.JOURNAL
    journal_dir: Path | None = None  # default: credits-journal/ next to the outbox
    # how long the journal's writer waits to fill a batch: each batch has a fixed cost
    # (ledger.journal.LINGER_SECONDS), so a longer wait is cheaper per charge; the price
    # is that the ledger shows a charge up to this much later (the headers never lag)
    journal_linger_ms: float = Field(default=LINGER_SECONDS * 1000, ge=0, le=10_000)
    # the event loop waits for a charge's fsync itself while the fsyncs it waited for lately
    # took under this (cheaper than a thread hand-off each way); 0: always off the loop
    journal_loop_sync_ms: float = Field(default=FAST_SYNC_SECONDS * 1000, ge=0, le=10)
    # PostgreSQL: a hold's commit does not wait for the WAL flush (ledger.Ledger docs)
    async_holds: bool = False
    # rich accounts borrow each call's credit from an escrow hold of escrow_calls worst
    # cases, when their available credit is escrow_rich_factor times that (ledger.escrow);
    # off: every call commits a hold of its own before it goes ahead
    escrow: EscrowMode = EscrowMode.LOCAL
    escrow_calls: int = Field(default=1000, ge=1)
    escrow_rich_factor: int = Field(default=8, ge=1)
    # with redis: each process leases blocks of this many worst cases and lends them itself
    escrow_block_calls: int = Field(default=50, ge=1)
    # keys of the Redis escrow; default: one prefix per ledger database (see runtime)
    redis_prefix: str | None = None
    # how long a cached account (tier, status) is trusted before it is read again
    account_cache_seconds: float = Field(default=5.0, ge=0)
    # how stale the period spend behind volume discounts and BYOK allowances may be
    spend_cache_seconds: float = Field(default=30.0, ge=0)

    @field_validator("account_order", mode="before")
    @classmethod
    def _split_order(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError("expected a comma-separated list")
        order = tuple(str(item).strip() for item in items if str(item).strip())
        unknown = [kind for kind in order if kind not in IDENTITY_KINDS]
        if unknown or not order:
            raise ValueError(f"expected some of {', '.join(IDENTITY_KINDS)}, got {value!r}")
        return order

    @property
    def journal_directory(self) -> Path:
        return self.journal_dir or self.outbox_path.parent / "credits-journal"

    @field_validator("escrow")
    @classmethod
    def _escrow_needs_redis(cls, value: EscrowMode, info: ValidationInfo) -> EscrowMode:
        if value is EscrowMode.REDIS and not info.data.get("redis_url"):
            raise ValueError("redis needs CREDITS_REDIS_URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("expected a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @field_validator("pricing_file")
    @classmethod
    def _pricing_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value


def load_settings() -> CreditSettings:
    """Read the settings; the first bad one is reported by its variable name."""
    try:
        return CreditSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}", error["msg"]) from None

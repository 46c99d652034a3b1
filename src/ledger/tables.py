"""ORM tables of the ledger (SQLAlchemy 2 typed declarative).

Only the ledger's own modules use these classes; callers get ``ledger.types``.
The same models serve SQLite and PostgreSQL; ``schema.sql`` and the Alembic
migrations are kept identical to them by tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from .types import ACCOUNT_KINDS, ACCOUNT_STATUSES, ENTRY_KINDS, HOLD_STATUSES, MODEL_ACCESS_EFFECTS

# Deterministic constraint names, so schema.sql, create_all and the migrations agree.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL (timestamptz) and SQLite (naive text).

    SQLite keeps no offset, so values are normalised to UTC before storing and the
    offset is put back on load; text comparison in SQL then stays chronological.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(20, 12) on PostgreSQL; text on SQLite, whose NUMERIC goes through float."""

    impl = Numeric(20, 12, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(20, 12, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"provider cost must be a Decimal, not {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountRow(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("kind", "external_id"),
        CheckConstraint(_in("kind", ACCOUNT_KINDS), name="kind"),
        CheckConstraint(_in("status", ACCOUNT_STATUSES), name="status"),
        CheckConstraint("overdraft_limit >= 0", name="overdraft_limit"),
        CheckConstraint("held >= 0", name="held"),
        CheckConstraint("debt >= 0", name="debt"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(255))
    tier: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    overdraft_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    debt: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # The subscription start: billing periods are counted from here (default: created_at).
    period_anchor: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Bring-your-own-key: the account pays its provider itself and is charged only fees.
    byok: Mapped[bool] = mapped_column(Boolean, default=False)
    # A tier change scheduled for later (a downgrade at the end of the period, say).
    pending_tier: Mapped[str | None] = mapped_column(String(64))
    pending_tier_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index(None, "account_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    team_id: Mapped[str | None] = mapped_column(String(255))
    alias: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    byok: Mapped[bool] = mapped_column(Boolean, default=False)


class GrantRow(Base):
    __tablename__ = "grants"
    __table_args__ = (
        # Burn-down order and the expiry sweep both start from these.
        Index(None, "account_id", "priority", "expires_at"),
        Index(None, "expires_at"),
        CheckConstraint("amount > 0", name="amount"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining"),
        CheckConstraint("source <> ''", name="source"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    source: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    external_ref: Mapped[str | None] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HoldRow(Base):
    __tablename__ = "holds"
    __table_args__ = (
        Index(None, "status", "expires_at"),
        Index(None, "account_id", "status"),
        CheckConstraint(_in("status", HOLD_STATUSES), name="status"),
        CheckConstraint("amount >= 0", name="amount"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="open")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reference: Mapped[str] = mapped_column(String(255), default="")
    charged: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EntryRow(Base):
    """Append-only: rows are inserted and never updated or deleted."""

    __tablename__ = "entries"
    __table_args__ = (
        Index(None, "account_id", "id"),
        CheckConstraint(_in("kind", ENTRY_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    held_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id"))
    hold_id: Mapped[str | None] = mapped_column(ForeignKey("holds.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    reference: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageEventRow(Base):
    __tablename__ = "usage_events"
    __table_args__ = (
        Index(None, "account_id", "created_at"),
        CheckConstraint("charged >= 0", name="charged"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Unique: the database itself refuses a second charge for one hold.
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    api_key_hash: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(255))
    team_id: Mapped[str | None] = mapped_column(String(255))
    end_user_id: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255), default="")
    provider: Mapped[str] = mapped_column(String(64), default="")
    call_type: Mapped[str] = mapped_column(String(64), default="")
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0)
    provider_cost_usd: Mapped[Decimal] = mapped_column(ExactDecimal)
    markup_rule: Mapped[str | None] = mapped_column(String(255))
    catalog_version: Mapped[str | None] = mapped_column(String(64))
    charged: Mapped[int] = mapped_column(BigInteger)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The call ran on the caller's own provider key: its provider cost is not ours.
    byok: Mapped[bool] = mapped_column(Boolean, default=False)


class QuotaCounterRow(Base):
    """Calls counted per account, quota scope and window; incremented only below the limit."""

    __tablename__ = "quota_counters"
    __table_args__ = (
        # The upsert's conflict target: one counter per (account, scope, window).
        UniqueConstraint("account_id", "scope", "window_start"),
        Index(None, "window_start"),
        CheckConstraint("count >= 0", name="count"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    scope: Mapped[str] = mapped_column(String(255))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobLeaseRow(Base):
    """Who runs a periodic job right now: one row per job, taken while free or expired."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TierRow(Base):
    """A tier of the admin-editable catalog; ``data`` is the tier's fields as JSON."""

    __tablename__ = "tiers"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")


class TierModelAccessRow(Base):
    __tablename__ = "tier_model_access"
    __table_args__ = (
        Index(None, "tier_code", "position"),
        CheckConstraint(_in("effect", MODEL_ACCESS_EFFECTS), name="effect"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tier_code: Mapped[str] = mapped_column(ForeignKey("tiers.code"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    pattern: Mapped[str] = mapped_column(String(255))
    effect: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")


class PricingRuleRow(Base):
    """A markup rule of the admin-editable catalog; ``data`` is the rule's fields as JSON."""

    __tablename__ = "pricing_rules"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")


class CatalogRevisionRow(Base):
    """One row, bumped by every catalog write (deletes too): the catalog's change stamp."""

    __tablename__ = "catalog_revision"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")


metadata = Base.metadata

"""Initial schema: accounts, api_keys, grants, holds, entries, usage_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Types are spelled out here rather than imported from ``ledger.tables`` so this
revision keeps meaning the same schema when the models change later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
# SQLite's NUMERIC goes through float; exact USD is stored there as text.
USD = sa.Numeric(20, 12).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("overdraft_limit", sa.BigInteger(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("kind IN ('team', 'user', 'end_user', 'key')", name=op.f("ck_accounts_kind")),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'past_due', 'closed')", name=op.f("ck_accounts_status")
        ),
        sa.CheckConstraint("debt >= 0", name=op.f("ck_accounts_debt")),
        sa.CheckConstraint("held >= 0", name=op.f("ck_accounts_held")),
        sa.CheckConstraint("overdraft_limit >= 0", name=op.f("ck_accounts_overdraft_limit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("kind", "external_id", name=op.f("uq_accounts_kind_external_id")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", ID, nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("team_id", sa.String(length=255), nullable=True),
        sa.Column("alias", sa.String(length=255), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_api_keys_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_account_id"), ["account_id"], unique=False)

    op.create_table(
        "grants",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("external_ref", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("source <> ''", name=op.f("ck_grants_source")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_grants_amount")),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name=op.f("ck_grants_remaining")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_grants_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.UniqueConstraint("external_ref", name=op.f("uq_grants_external_ref")),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_grants_account_id_priority_expires_at"),
            ["account_id", "priority", "expires_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_grants_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "holds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("resolved_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'settled', 'voided', 'expired')", name=op.f("ck_holds_status")
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_holds_amount")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_holds_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_holds_account_id_status"), ["account_id", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_holds_status_expires_at"), ["status", "expires_at"], unique=False
        )

    op.create_table(
        "entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("held_delta", sa.BigInteger(), nullable=False),
        sa.Column("grant_id", ID, nullable=True),
        sa.Column("hold_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "kind IN ('grant', 'hold', 'release', 'charge', 'expire', 'refund', 'transfer', 'adjustment')",
            name=op.f("ck_entries_kind"),
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_entries_account_id_accounts")),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], name=op.f("fk_entries_grant_id_grants")),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name=op.f("fk_entries_hold_id_holds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
    )
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_entries_account_id_id"), ["account_id", "id"], unique=False)

    op.create_table(
        "usage_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("hold_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("api_key_hash", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("team_id", sa.String(length=255), nullable=True),
        sa.Column("end_user_id", sa.String(length=255), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("call_type", sa.String(length=64), nullable=False),
        sa.Column("tokens_in", sa.BigInteger(), nullable=False),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False),
        sa.Column("provider_cost_usd", USD, nullable=False),
        sa.Column("markup_rule", sa.String(length=255), nullable=True),
        sa.Column("catalog_version", sa.String(length=64), nullable=True),
        sa.Column("charged", sa.BigInteger(), nullable=False),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("charged >= 0", name=op.f("ck_usage_events_charged")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_usage_events_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name=op.f("fk_usage_events_hold_id_holds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("hold_id", name=op.f("uq_usage_events_hold_id")),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_events_account_id_created_at"), ["account_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_events_account_id_created_at"))

    op.drop_table("usage_events")
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_entries_account_id_id"))

    op.drop_table("entries")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_holds_status_expires_at"))
        batch_op.drop_index(batch_op.f("ix_holds_account_id_status"))

    op.drop_table("holds")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_expires_at"))
        batch_op.drop_index(batch_op.f("ix_grants_account_id_priority_expires_at"))

    op.drop_table("grants")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_account_id"))

    op.drop_table("api_keys")
    op.drop_table("accounts")

"""Billing periods, BYOK, scheduled tier changes, quota counters, job leases, catalog rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

- accounts: period_anchor (backfilled with created_at), byok, pending_tier, pending_tier_at
- api_keys, usage_events: byok
- new tables: quota_counters, job_leases, tiers, tier_model_access, pricing_rules,
  catalog_revision

New NOT NULL columns are added with a server default (or nullable, then backfilled)
so existing rows get a value; the default is dropped afterwards, as the models have none.
Types are spelled out here rather than imported from ``ledger.tables``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("period_anchor", TIMESTAMP, nullable=True))
        batch_op.add_column(sa.Column("byok", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("pending_tier", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("pending_tier_at", TIMESTAMP, nullable=True))
    op.execute("UPDATE accounts SET period_anchor = created_at")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.alter_column("period_anchor", existing_type=TIMESTAMP, nullable=False)
        batch_op.alter_column("byok", existing_type=sa.Boolean(), server_default=None)
        batch_op.create_index(batch_op.f("ix_accounts_pending_tier_at"), ["pending_tier_at"], unique=False)

    for table in ("api_keys", "usage_events"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("byok", sa.Boolean(), nullable=False, server_default=sa.false()))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("byok", existing_type=sa.Boolean(), server_default=None)

    op.create_table(
        "quota_counters",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("window_start", TIMESTAMP, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("count >= 0", name=op.f("ck_quota_counters_count")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_quota_counters_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_counters")),
        sa.UniqueConstraint(
            "account_id",
            "scope",
            "window_start",
            name=op.f("uq_quota_counters_account_id_scope_window_start"),
        ),
    )
    with op.batch_alter_table("quota_counters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quota_counters_window_start"), ["window_start"], unique=False)

    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("acquired_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_leases")),
    )
    op.create_table(
        "tiers",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_tiers")),
    )
    op.create_table(
        "tier_model_access",
        sa.Column("id", ID, nullable=False),
        sa.Column("tier_code", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(length=255), nullable=False),
        sa.Column("effect", sa.String(length=8), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.CheckConstraint("effect IN ('allow', 'deny')", name=op.f("ck_tier_model_access_effect")),
        sa.ForeignKeyConstraint(
            ["tier_code"], ["tiers.code"], name=op.f("fk_tier_model_access_tier_code_tiers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_model_access")),
    )
    with op.batch_alter_table("tier_model_access", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tier_model_access_tier_code_position"), ["tier_code", "position"], unique=False
        )
    op.create_table(
        "pricing_rules",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pricing_rules")),
    )
    op.create_table(
        "catalog_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_catalog_revision_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_revision")),
    )


def downgrade() -> None:
    op.drop_table("catalog_revision")
    op.drop_table("pricing_rules")
    with op.batch_alter_table("tier_model_access", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tier_model_access_tier_code_position"))
    op.drop_table("tier_model_access")
    op.drop_table("tiers")
    op.drop_table("job_leases")
    with op.batch_alter_table("quota_counters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quota_counters_window_start"))
    op.drop_table("quota_counters")

    for table in ("usage_events", "api_keys"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("byok")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_pending_tier_at"))
        batch_op.drop_column("pending_tier_at")
        batch_op.drop_column("pending_tier")
        batch_op.drop_column("byok")
        batch_op.drop_column("period_anchor")

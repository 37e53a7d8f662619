"""Limits: rate-limit breaches, per-organisation overrides, noisy-neighbour flags.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-29 03:16:44.649685
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-lint: allow prefer-text-field -- VARCHAR(n) lengths are the domain's limits
# keel-lint: allow prefer-identity -- new empty log tables; one id type for SQLite and PostgreSQL


def upgrade() -> None:
    op.create_table(
        "noisy_flags",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_noisy_flags")),
    )
    with op.batch_alter_table("noisy_flags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_noisy_flags_cleared_at"), ["cleared_at"], unique=False)

    op.create_table(
        "rate_limit_breaches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("limit_name", sa.String(length=100), nullable=False),
        sa.Column("key_kind", sa.String(length=10), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=True),
        sa.Column("user_hash", sa.String(length=64), nullable=True),
        sa.Column("ip_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_limit_breaches")),
    )
    with op.batch_alter_table("rate_limit_breaches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rate_limit_breaches_occurred_at"), ["occurred_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_rate_limit_breaches_org_id_occurred_at"),
            ["org_id", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "limit_overrides",
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("limit_name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_limit_overrides_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("org_id", "limit_name", name=op.f("pk_limit_overrides")),
    )


def downgrade() -> None:
    op.drop_table("limit_overrides")
    with op.batch_alter_table("rate_limit_breaches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rate_limit_breaches_org_id_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_rate_limit_breaches_occurred_at"))

    op.drop_table("rate_limit_breaches")
    with op.batch_alter_table("noisy_flags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_noisy_flags_cleared_at"))

    op.drop_table("noisy_flags")

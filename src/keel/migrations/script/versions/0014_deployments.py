"""Safe deploys: releases, deployments, their approvals and state transitions.

Safe before a deploy: four new tables, nothing existing changes. The partial
unique index on ``deployments(environment) WHERE finished_at IS NULL`` is the
rule "one active deployment per environment", kept by the database.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 11:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-lint: allow prefer-text-field -- VARCHAR(n) lengths are the domain's limits
# keel-lint: allow prefer-bigint-over-int -- approval counts and transition numbers are small


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("git_sha", sa.String(length=64), nullable=False),
        sa.Column("migration_head", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
        sa.UniqueConstraint(
            "version",
            "git_sha",
            "migration_head",
            name=op.f("uq_releases_version_git_sha_migration_head"),
        ),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("release_id", sa.String(length=36), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["release_id"], ["releases.id"], name=op.f("fk_deployments_release_id_releases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deployments_environment_active",
            ["environment"],
            unique=True,
            postgresql_where=sa.text("finished_at IS NULL"),
            sqlite_where=sa.text("finished_at IS NULL"),
        )
        batch_op.create_index(
            batch_op.f("ix_deployments_environment_created_at"),
            ["environment", "created_at"],
            unique=False,
        )
    op.create_table(
        "deployment_approvals",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("approver", sa.String(length=100), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_approvals_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("deployment_id", "approver", name=op.f("pk_deployment_approvals")),
    )
    op.create_table(
        "deployment_transitions",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(length=24), nullable=True),
        sa.Column("to_state", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_transitions_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("deployment_id", "seq", name=op.f("pk_deployment_transitions")),
    )


def downgrade() -> None:
    op.drop_table("deployment_transitions")
    op.drop_table("deployment_approvals")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployments_environment_created_at"))
        batch_op.drop_index("ix_deployments_environment_active")
    op.drop_table("deployments")
    op.drop_table("releases")

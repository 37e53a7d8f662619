"""Where versions run on one machine: fronts, version groups and their processes, records.

Safe before a deploy: four new tables, nothing existing changes. One front per
environment (the primary key); a deployment holds one group per role and name.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 17:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-lint: allow prefer-text-field -- VARCHAR(n) lengths are the domain's limits
# keel-lint: allow prefer-bigint-over-int -- pids, ports, positions and percentages are small


def upgrade() -> None:
    op.create_table(
        "deploy_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("deployment_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("release_id", sa.String(length=36), nullable=True),
        sa.Column("host_name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deploy_groups_deployment_id_deployments"),
        ),
        sa.ForeignKeyConstraint(
            ["release_id"], ["releases.id"], name=op.f("fk_deploy_groups_release_id_releases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deploy_groups")),
        sa.UniqueConstraint(
            "deployment_id", "name", name=op.f("uq_deploy_groups_deployment_id_name")
        ),
        sa.UniqueConstraint(
            "deployment_id", "role", name=op.f("uq_deploy_groups_deployment_id_role")
        ),
    )
    with op.batch_alter_table("deploy_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deploy_groups_environment_name"), ["environment", "name"], unique=False
        )
    op.create_table(
        "deploy_group_processes",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("start_mark", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["deploy_groups.id"],
            name=op.f("fk_deploy_group_processes_group_id_deploy_groups"),
        ),
        sa.PrimaryKeyConstraint("group_id", "position", name=op.f("pk_deploy_group_processes")),
    )
    op.create_table(
        "deploy_fronts",
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("host_name", sa.String(length=255), nullable=False),
        sa.Column("workdir", sa.Text(), nullable=False),
        sa.Column("admin_socket", sa.Text(), nullable=False),
        sa.Column("config_path", sa.Text(), nullable=False),
        sa.Column("bind_host", sa.String(length=255), nullable=False),
        sa.Column("bind_port", sa.Integer(), nullable=False),
        sa.Column("haproxy_pid", sa.Integer(), nullable=False),
        sa.Column("haproxy_start_mark", sa.String(length=64), nullable=False),
        sa.Column("haproxy_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("live_group_id", sa.String(length=36), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["live_group_id"],
            ["deploy_groups.id"],
            name=op.f("fk_deploy_fronts_live_group_id_deploy_groups"),
        ),
        sa.PrimaryKeyConstraint("environment", name=op.f("pk_deploy_fronts")),
    )
    op.create_table(
        "deploy_records",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("admin_socket", sa.Text(), nullable=False),
        sa.Column("step_percent", sa.Integer(), nullable=True),
        sa.Column("step_verdict", sa.String(length=16), nullable=True),
        sa.Column("step_canary_requests", sa.BigInteger(), nullable=True),
        sa.Column("step_baseline_requests", sa.BigInteger(), nullable=True),
        sa.Column("step_reasons", sa.Text(), nullable=True),
        sa.Column("step_analyses", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deploy_records_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("deployment_id", name=op.f("pk_deploy_records")),
    )


def downgrade() -> None:
    op.drop_table("deploy_records")
    op.drop_table("deploy_fronts")
    op.drop_table("deploy_group_processes")
    with op.batch_alter_table("deploy_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deploy_groups_environment_name"))
    op.drop_table("deploy_groups")

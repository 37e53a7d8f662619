"""Deployments' contract phase: where a promoted deployment's contract revisions stand.

Safe before a deploy: two nullable columns, nothing existing changes (no
rewrite, no default to backfill). ``contract_phase`` is pending, running,
applied or failed once the deployment is promoted; ``contract_reason`` says why
(the revisions applied, the failure, or why the phase waits).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 17:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-lint: allow prefer-text-field -- VARCHAR(16) holds one of four phase names, as state does


def upgrade() -> None:
    op.add_column("deployments", sa.Column("contract_phase", sa.String(length=16), nullable=True))
    op.add_column("deployments", sa.Column("contract_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("contract_reason")
        batch.drop_column("contract_phase")

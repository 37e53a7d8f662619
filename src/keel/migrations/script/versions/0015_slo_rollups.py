"""SLO rollups: per SLO and minute, the requests counted and the good ones.

Safe before a deploy: one new table, nothing existing changes. Serving
processes add to its rows; ``keel slo report`` reads them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 14:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-lint: allow prefer-text-field -- VARCHAR(63) is the SLO name's own limit


def upgrade() -> None:
    op.create_table(
        "slo_rollups",
        sa.Column("slo_name", sa.String(length=63), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("good", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("slo_name", "minute", name=op.f("pk_slo_rollups")),
    )


def downgrade() -> None:
    op.drop_table("slo_rollups")

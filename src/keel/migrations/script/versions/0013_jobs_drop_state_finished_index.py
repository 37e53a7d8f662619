"""Jobs: drop 0004's ``(state, finished_at)`` index; 0010's partial index replaces it.

Run after the deploy, like every contract revision. Dropped concurrently, so
reads and writes of jobs go on; the downgrade builds it again the same way.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 10:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.db.migrations.concurrently import build_index, drop_index

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: contract
# keel-transaction: none

NAME = "ix_jobs_state_finished_at"


def upgrade() -> None:
    drop_index(NAME, "jobs")


def downgrade() -> None:
    build_index(NAME, "jobs", ["state", "finished_at"])

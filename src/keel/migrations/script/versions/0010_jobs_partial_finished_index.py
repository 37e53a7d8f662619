"""Jobs: a partial index on ``(state, finished_at)`` of finished jobs, built concurrently.

Only a finished job (succeeded, dead, cancelled) has ``finished_at``, and only
those rows are purged by age (``state IN (…) AND finished_at < cutoff``); 0004's
``ix_jobs_state_finished_at`` takes an entry for every job on every INSERT. The
new index has the same columns, so it needs a name of its own while both exist:
``ix_jobs_state_finished_at_partial``.

Safe before a deploy: a new index only; the old one goes in contract revision
0013. Built concurrently, so writes go on; a leftover INVALID index from a
failed earlier attempt is dropped first.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 10:02:00
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.db.migrations.concurrently import build_index, drop_index

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-transaction: none

NAME = "ix_jobs_state_finished_at_partial"


def upgrade() -> None:
    build_index(NAME, "jobs", ["state", "finished_at"], where="finished_at IS NOT NULL")


def downgrade() -> None:
    drop_index(NAME, "jobs")

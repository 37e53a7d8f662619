"""Jobs: a partial index on ``lease_expires_at``, built concurrently.

Only a running job holds a lease, so only those rows need to be in the index
that finds expired leases; 0004's ``(state, lease_expires_at)`` index takes an
entry for every job on every INSERT. Reclaiming asks for
``state = 'running' AND lease_expires_at < now``: the strict comparison implies
``lease_expires_at IS NOT NULL``, so the planner uses this index, and the
state is checked on the few rows it returns.

Safe before a deploy: a new index only; the old one goes in contract revision
0012. Built concurrently, so writes go on; a leftover INVALID index from a
failed earlier attempt is dropped first.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 10:01:00
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.db.migrations.concurrently import build_index, drop_index

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-transaction: none

NAME = "ix_jobs_lease_expires_at"


def upgrade() -> None:
    build_index(NAME, "jobs", ["lease_expires_at"], where="lease_expires_at IS NOT NULL")


def downgrade() -> None:
    drop_index(NAME, "jobs")

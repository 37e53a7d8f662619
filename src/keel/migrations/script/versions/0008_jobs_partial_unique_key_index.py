"""Jobs: a partial unique index on ``unique_key``, built concurrently.

Most jobs have no ``unique_key``, yet the unique constraint of 0004 puts every
row's NULL in its index: one more index entry for every INSERT of the enqueue
hot path. A unique index ``WHERE unique_key IS NOT NULL`` keeps the same rule
(NULLs never conflict anyway) and is written only for keyed jobs.

Safe before a deploy: the old constraint stays until the contract revision
0011, and the code's ``ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL``
is answered by either index (PostgreSQL infers every unique index that covers
the predicate, partial or not). Built concurrently, so writes go on; a leftover
INVALID index from a failed earlier attempt is dropped first.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.db.migrations.concurrently import build_index, drop_index

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand
# keel-transaction: none

NAME = "ix_jobs_unique_key"


def upgrade() -> None:
    build_index(NAME, "jobs", ["unique_key"], unique=True, where="unique_key IS NOT NULL")


def downgrade() -> None:
    drop_index(NAME, "jobs")

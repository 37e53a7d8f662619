"""Jobs: drop 0004's unique constraint on ``unique_key``; 0008's partial index holds the rule.

Run after the deploy of the code that says ``ON CONFLICT (unique_key) WHERE
unique_key IS NOT NULL``: the previous release's bare ``ON CONFLICT
(unique_key)`` cannot be answered by a partial index alone and would fail.

PostgreSQL: ``ALTER TABLE … DROP CONSTRAINT`` takes ACCESS EXCLUSIVE on jobs
for an instant (the runner's lock_timeout bounds the wait); nothing is
scanned. SQLite keeps the constraint inside the table definition (0004 created
it inline), so the table is rebuilt without it, its indexes with it.

The downgrade puts the constraint back without blocking writes on PostgreSQL:
its index is built concurrently (hence ``keel-transaction: none``), then
attached with ``ADD CONSTRAINT … USING INDEX`` (a catalog change only).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 10:03:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from keel.db.migrations.concurrently import build_index

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: contract
# keel-transaction: none
# keel-lint: allow ban-drop-constraint -- the partial unique index of 0008 keeps the rule

CONSTRAINT = "uq_jobs_unique_key"


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("jobs", recreate="always") as batch_op:
            batch_op.drop_constraint(CONSTRAINT, type_="unique")
        return
    op.drop_constraint(CONSTRAINT, "jobs", type_="unique")


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("jobs", recreate="always") as batch_op:
            batch_op.create_unique_constraint(CONSTRAINT, ["unique_key"])
        return
    build_index(CONSTRAINT, "jobs", ["unique_key"], unique=True)
    op.execute(f"ALTER TABLE jobs ADD CONSTRAINT {CONSTRAINT} UNIQUE USING INDEX {CONSTRAINT}")

"""Jobs: one NOTIFY per INSERT statement instead of one trigger call per row.

Revision 0004 woke workers from a row-level trigger: PostgreSQL folds the
duplicate notifications of a transaction into one, but still ran the trigger
once per row — 9–19 ms of a 45–60 ms INSERT of 1,000 jobs (EXPLAIN ANALYZE on
the development box). A statement-level trigger over the inserted rows
(a transition table) notifies each queue once per statement. Rows that become
``ready`` by an UPDATE (a reclaimed lease, a requeue, a released job) keep the
row-level trigger: transition tables cannot be combined with ``UPDATE OF``, and
those updates are not on a hot path.

Safe before a deploy: the running code never sees the triggers, only their
wake-ups, and the new trigger exists before the old one is narrowed (all in one
transaction on PostgreSQL). SQLite has no triggers here; nothing to do.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 09:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: expand

NOTIFY_INSERTED_FUNCTION = """
CREATE OR REPLACE FUNCTION keel_jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keel_jobs', ready.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'ready') AS ready;
    RETURN NULL;
END
$$
"""
NOTIFY_INSERTED_TRIGGER = """
CREATE TRIGGER keel_jobs_notify_inserted AFTER INSERT ON jobs
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION keel_jobs_notify_inserted()
"""
NOTIFY_UPDATED_TRIGGER = """
CREATE TRIGGER keel_jobs_notify AFTER UPDATE OF state ON jobs
FOR EACH ROW WHEN (NEW.state = 'ready') EXECUTE FUNCTION keel_jobs_notify()
"""
NOTIFY_TRIGGER_0004 = """
CREATE TRIGGER keel_jobs_notify AFTER INSERT OR UPDATE OF state ON jobs
FOR EACH ROW WHEN (NEW.state = 'ready') EXECUTE FUNCTION keel_jobs_notify()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(NOTIFY_INSERTED_FUNCTION)
    op.execute(NOTIFY_INSERTED_TRIGGER)
    op.execute("DROP TRIGGER IF EXISTS keel_jobs_notify ON jobs")
    op.execute(NOTIFY_UPDATED_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS keel_jobs_notify ON jobs")
    op.execute(NOTIFY_TRIGGER_0004)
    op.execute("DROP TRIGGER IF EXISTS keel_jobs_notify_inserted ON jobs")
    op.execute("DROP FUNCTION IF EXISTS keel_jobs_notify_inserted()")

"""The tables of the job queue: the jobs themselves and the periodic schedules.

A job row is the whole truth about a job: its state, when it may run next,
which worker holds it and until when (the lease), and the trace context of the
request that enqueued it. ``unique_key`` makes a logical job enqueue once;
``job_schedules`` holds, per periodic job, the last schedule slot that some
worker claimed, so a slot runs once however many workers there are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from keel.db.tables import ID, Base
from keel.db.types import UTCDateTime


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The claim's scan: due jobs of a queue, best priority first.
        Index(None, "queue", "state", "run_at"),
        # The other three are partial: each serves only rows where its column is
        # set (keyed jobs, running jobs, finished jobs), so the common INSERT of an
        # unkeyed, ready job writes none of them (migrations 0008-0013).
        Index(
            None,
            "unique_key",
            unique=True,
            postgresql_where=text("unique_key IS NOT NULL"),
            sqlite_where=text("unique_key IS NOT NULL"),
        ),
        # Reclaiming expired leases (``lease_expires_at < now`` implies NOT NULL).
        Index(
            None,
            "lease_expires_at",
            postgresql_where=text("lease_expires_at IS NOT NULL"),
            sqlite_where=text("lease_expires_at IS NOT NULL"),
        ),
        # Purging finished jobs by age. Named, not by convention: it replaced an
        # index of the same columns that had the convention's name while both existed.
        Index(
            "ix_jobs_state_finished_at_partial",
            "state",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    queue: Mapped[str] = mapped_column(String(64))
    job_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime())
    unique_key: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    trace_context: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class JobSchedule(Base):
    __tablename__ = "job_schedules"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_slot: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_job_id: Mapped[str | None] = mapped_column(ID, default=None)

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

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keel.db.tables import ID, Base
from keel.db.types import UTCDateTime


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("unique_key"),
        # The claim's scan: due jobs of a queue, best priority first.
        Index(None, "queue", "state", "run_at"),
        # Reclaiming expired leases and purging finished jobs.
        Index(None, "state", "lease_expires_at"),
        Index(None, "state", "finished_at"),
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

"""Reading and operating on jobs in a caller's session (what ``keel jobs`` runs).

Each function runs in the transaction of the session it is given; the SQL
connectors run them in a transaction of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keel.db.tables_jobs import Job
from keel.errors import NotFound
from keel.ids import is_valid_id
from keel.jobs import queries
from keel.jobs.connector import JobRecord, QueueStats
from keel.jobs.states import JobState, check


def _record(job: Job) -> JobRecord:
    return JobRecord(
        id=job.id,
        queue=job.queue,
        job_type=job.job_type,
        payload=dict(job.payload or {}),
        state=job.state,
        priority=job.priority,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        run_at=job.run_at,
        unique_key=job.unique_key,
        lease_owner=job.lease_owner,
        lease_expires_at=job.lease_expires_at,
        trace_context=dict(job.trace_context or {}),
        last_error=job.last_error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


async def get_in_session(session: AsyncSession, job_id: str) -> JobRecord:
    row = await session.get(Job, job_id) if is_valid_id(job_id) else None
    if row is None:
        raise NotFound(f"no job {job_id}")
    return _record(row)


async def list_in_session(
    session: AsyncSession,
    *,
    state: JobState | None = None,
    queue: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
) -> list[JobRecord]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Job.state == state.value)
    if queue is not None:
        query = query.where(Job.queue == queue)
    if job_type is not None:
        query = query.where(Job.job_type == job_type)
    return [_record(job) for job in await session.scalars(query)]


async def stats_in_session(session: AsyncSession, now: datetime) -> list[QueueStats]:
    depth: dict[str, dict[JobState, int]] = {}
    counts: Any = await session.execute(queries.depth_by_queue_and_state())
    for queue, state, count in counts:
        depth.setdefault(queue, {})[JobState(state)] = int(count)
    oldest: dict[str, float] = {}
    due: Any = await session.execute(queries.oldest_due(now))
    for queue, run_at in due:
        if run_at is not None:
            oldest[queue] = max(0.0, (now - run_at).total_seconds())
            depth.setdefault(queue, {})
    return [QueueStats(queue, depth[queue], oldest.get(queue, 0.0)) for queue in sorted(depth)]


async def cancel_in_session(session: AsyncSession, job_id: str, now: datetime) -> None:
    job = await get_in_session(session, job_id)
    check(JobState(job.state), JobState.CANCELLED)
    result: Any = await session.execute(queries.cancel(job_id, now))
    if result.rowcount != 1:  # claimed meanwhile: refuse the same way
        check(JobState.RUNNING, JobState.CANCELLED)


async def requeue_dead_in_session(
    session: AsyncSession, job_ids: Sequence[str] | None, now: datetime
) -> list[str]:
    if job_ids is not None:
        for job_id in job_ids:
            check(JobState((await get_in_session(session, job_id)).state), JobState.READY)
    result = await session.execute(queries.requeue_dead(job_ids, now))
    return [row.id for row in result]


async def purge_in_session(
    session: AsyncSession,
    states: Sequence[JobState],
    *,
    finished_before: datetime | None = None,
    job_ids: Sequence[str] | None = None,
) -> int:
    if job_ids is not None:
        statement = queries.purge_ids(job_ids, states)
    elif finished_before is not None:
        statement = queries.purge(states, finished_before)
    else:
        raise ValueError("purge needs job ids or a cutoff")
    result: Any = await session.execute(statement)
    return int(result.rowcount)


__all__ = [
    "cancel_in_session",
    "get_in_session",
    "list_in_session",
    "purge_in_session",
    "requeue_dead_in_session",
    "stats_in_session",
]

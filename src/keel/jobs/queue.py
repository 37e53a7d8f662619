"""Enqueueing inside the caller's transaction, and the operator's actions on jobs.

``enqueue`` only adds a row to the session it is given: the job commits with the
caller's own writes or not at all — no lost job when the caller commits, no
phantom job when it rolls back. On PostgreSQL a trigger (migration 0004) sends
``NOTIFY keel_jobs`` for every row that becomes ``ready``; PostgreSQL delivers it
at commit, so a worker wakes only for jobs that exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import propagate
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.tables_jobs import Job
from keel.errors import InvalidInput, NotFound
from keel.ids import is_valid_id, new_ids
from keel.jobs import queries
from keel.jobs.registry import DEFAULT_QUEUE, JobType
from keel.jobs.retry import RetryPolicy
from keel.jobs.states import FINISHED, QUEUED, JobState, check

DEFAULT_POLICY = RetryPolicy()
TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")


@dataclass(frozen=True)
class NewJob:
    """One job of a batch for :func:`enqueue_many`."""

    job_type: JobType | str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    unique_key: str | None = None
    max_attempts: int | None = None


def current_trace_context() -> dict[str, str]:
    """The W3C ``traceparent``/``tracestate`` of the current span, if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key: value for key, value in carrier.items() if key in TRACE_CONTEXT_KEYS}


@dataclass(frozen=True, slots=True)
class ValidatedRow:
    """One validated job, the columns the caller chooses; the rest have fixed starts."""

    id: str
    queue: str
    job_type: str
    payload: dict[str, Any]
    state: str
    priority: int
    max_attempts: int
    run_at: datetime
    unique_key: str | None


def validated_row(job: NewJob, job_id: str, now: datetime) -> ValidatedRow:
    if isinstance(job.job_type, JobType):
        name, queue, policy = job.job_type.name, job.job_type.queue, job.job_type.retry
    else:
        name, queue, policy = job.job_type, DEFAULT_QUEUE, DEFAULT_POLICY
    if not name:
        raise InvalidInput("a job needs a type")
    max_attempts = job.max_attempts if job.max_attempts is not None else policy.max_attempts
    if max_attempts < 1:
        raise InvalidInput("max_attempts must be at least 1")
    run_at = job.run_at or now
    if run_at.tzinfo is None:
        raise InvalidInput("run_at must be timezone-aware")
    state = JobState.SCHEDULED if run_at > now else JobState.READY
    return ValidatedRow(
        job_id,
        job.queue or queue,
        name,
        dict(job.payload),
        state.value,
        job.priority,
        max_attempts,
        run_at,
        job.unique_key,
    )


def postgresql_parameters(
    rows: Sequence[ValidatedRow], now: datetime, trace_context: Mapping[str, str]
) -> tuple[Any, ...]:
    """The bound parameters of ``INSERT_JOBS_POSTGRESQL`` for ``rows`` (one array per column)."""
    return (
        [row.id for row in rows],
        [row.queue for row in rows],
        [row.job_type for row in rows],
        [json.dumps(row.payload) if row.payload else "{}" for row in rows],
        [row.state for row in rows],
        [row.priority for row in rows],
        [row.max_attempts for row in rows],
        [row.run_at for row in rows],
        [row.unique_key for row in rows],
        json.dumps(trace_context),
        now,
    )


def postgresql_row_parameters(
    row: ValidatedRow, now: datetime, trace_context: Mapping[str, str]
) -> tuple[Any, ...]:
    """The bound parameters of ``INSERT_JOB_POSTGRESQL`` for one ``row``."""
    return (
        row.id,
        row.queue,
        row.job_type,
        json.dumps(row.payload) if row.payload else "{}",
        row.state,
        row.priority,
        row.max_attempts,
        row.run_at,
        row.unique_key,
        json.dumps(trace_context),
        now,
    )


async def _insert_postgresql(
    connection: AsyncConnection,
    rows: list[ValidatedRow],
    now: datetime,
    trace_context: dict[str, str],
) -> set[str]:
    """One INSERT statement for the whole batch; returns the ids inserted.

    One job takes the single-row statement, a batch the ``unnest`` one.
    """
    if len(rows) == 1:
        statement = queries.INSERT_JOB_POSTGRESQL
        parameters = postgresql_row_parameters(rows[0], now, trace_context)
    else:
        statement = queries.INSERT_JOBS_POSTGRESQL
        parameters = postgresql_parameters(rows, now, trace_context)
    result = await connection.exec_driver_sql(statement, parameters)
    return {id_ for (id_,) in result}


async def _insert_core(
    connection: AsyncConnection,
    rows: list[ValidatedRow],
    now: datetime,
    trace_context: dict[str, str],
) -> set[str]:
    values = [
        {
            "id": row.id,
            "queue": row.queue,
            "job_type": row.job_type,
            "payload": row.payload,
            "state": row.state,
            "priority": row.priority,
            "attempt": 0,
            "max_attempts": row.max_attempts,
            "run_at": row.run_at,
            "unique_key": row.unique_key,
            "lease_owner": None,
            "lease_expires_at": None,
            "trace_context": trace_context,
            "last_error": None,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
        }
        for row in rows
    ]
    result = await connection.execute(queries.insert_jobs(connection.dialect.name), values)
    return {row.id for row in result}


async def enqueue_many(
    session: AsyncSession, jobs: Sequence[NewJob], *, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Add jobs in the session's transaction; returns one id per job, in order.

    A job whose ``unique_key`` is already taken is not added again: its place in
    the result holds the id of the job that has the key.
    """
    if not jobs:
        return []
    now = clock.now()
    trace_context = current_trace_context()
    rows = [
        validated_row(job, job_id, now)
        for job, job_id in zip(jobs, new_ids(len(jobs)), strict=True)
    ]
    # The session's own connection, so the jobs join the caller's transaction;
    # no ORM unit of work, no per-call compilation on PostgreSQL.
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        inserted = await _insert_postgresql(connection, rows, now, trace_context)
    else:
        inserted = await _insert_core(connection, rows, now, trace_context)
    ids = [row.id for row in rows]
    if len(inserted) == len(rows):
        return ids
    missing = [i for i, row in enumerate(rows) if row.id not in inserted]
    keys = sorted({key for i in missing if (key := rows[i].unique_key) is not None})
    found = {
        row.unique_key: row.id for row in await session.execute(queries.ids_by_unique_key(keys))
    }
    for index in missing:
        ids[index] = found[rows[index].unique_key]
    return ids


async def enqueue(
    session: AsyncSession,
    job_type: JobType | str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    unique_key: str | None = None,
    max_attempts: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """Add one job in the session's transaction; returns its id.

    When ``unique_key`` is taken, nothing is added and the id of the job holding it is returned.
    """
    job = NewJob(job_type, payload or {}, queue, priority, run_at, unique_key, max_attempts)
    return (await enqueue_many(session, [job], clock=clock))[0]


# --- reading ------------------------------------------------------------------


async def get(session: AsyncSession, job_id: str) -> Job:
    row = await session.get(Job, job_id) if is_valid_id(job_id) else None
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


async def list_jobs(
    session: AsyncSession,
    *,
    state: JobState | None = None,
    queue: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Job.state == state.value)
    if queue is not None:
        query = query.where(Job.queue == queue)
    if job_type is not None:
        query = query.where(Job.job_type == job_type)
    return list(await session.scalars(query))


@dataclass(frozen=True)
class QueueStats:
    queue: str
    depth: dict[JobState, int]
    oldest_ready_age_seconds: float


async def stats(session: AsyncSession, now: datetime) -> list[QueueStats]:
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


# --- operator actions -----------------------------------------------------------


async def cancel(session: AsyncSession, job_id: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
    """Cancel a queued job; a running or finished job cannot be cancelled."""
    job = await get(session, job_id)
    check(JobState(job.state), JobState.CANCELLED)
    result = await session.execute(queries.cancel(job_id, clock.now()))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        check(JobState.RUNNING, JobState.CANCELLED)  # claimed meanwhile: refuse the same way


async def requeue_dead(
    session: AsyncSession, job_ids: Sequence[str] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Dead jobs back to ``ready`` with their attempts reset; ``None`` means every dead job."""
    if job_ids is not None:
        for job_id in job_ids:
            check(JobState((await get(session, job_id)).state), JobState.READY)
    result = await session.execute(queries.requeue_dead(job_ids, clock.now()))
    return [row.id for row in result]


async def purge_dead(
    session: AsyncSession,
    *,
    job_ids: Sequence[str] | None = None,
    older_than: timedelta | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Delete dead jobs: the ones named, or those dead for longer than ``older_than``."""
    if job_ids is not None:
        result = await session.execute(queries.purge_ids(job_ids, JobState.DEAD))
    else:
        cutoff = clock.now() - (older_than or timedelta(0))
        result = await session.execute(queries.purge([JobState.DEAD], cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_finished(
    session: AsyncSession, *, older_than: timedelta, clock: Clock = SYSTEM_CLOCK
) -> int:
    """Delete succeeded and cancelled jobs finished longer ago than ``older_than``.

    Dead jobs stay until an operator requeues or purges them.
    """
    states = [s for s in FINISHED if s is not JobState.DEAD]
    result = await session.execute(queries.purge(states, clock.now() - older_than))
    return int(result.rowcount)  # type: ignore[attr-defined]


__all__ = [
    "QUEUED",
    "NewJob",
    "QueueStats",
    "cancel",
    "current_trace_context",
    "enqueue",
    "enqueue_many",
    "get",
    "list_jobs",
    "purge_dead",
    "purge_finished",
    "requeue_dead",
    "stats",
]

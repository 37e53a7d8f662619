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


# One job's columns after validation, in the order of the insert's parameters
# from ``queue`` on: queue, job_type, payload, state, priority, max_attempts,
# run_at, unique_key. A plain tuple, not a dataclass: a batch makes one per
# distinct job and transposes them into columns with ``zip``.
ResolvedJob = tuple[str, str, dict[str, Any], str, int, int, datetime, str | None]


def resolve_job(
    job_type: JobType | str,
    payload: dict[str, Any],
    queue: str | None,
    priority: int,
    run_at: datetime | None,
    unique_key: str | None,
    max_attempts: int | None,
    now: datetime,
) -> ResolvedJob:
    """Validate one job and fill in its type's defaults; ``payload`` is stored as given."""
    if isinstance(job_type, JobType):
        name, default_queue, policy = job_type.name, job_type.queue, job_type.retry
    else:
        name, default_queue, policy = job_type, DEFAULT_QUEUE, DEFAULT_POLICY
    if not name:
        raise InvalidInput("a job needs a type")
    attempts = max_attempts if max_attempts is not None else policy.max_attempts
    if attempts < 1:
        raise InvalidInput("max_attempts must be at least 1")
    due = run_at or now
    if due.tzinfo is None:
        raise InvalidInput("run_at must be timezone-aware")
    state = _SCHEDULED if due > now else _READY
    return (queue or default_queue, name, payload, state, priority, attempts, due, unique_key)


_SCHEDULED = JobState.SCHEDULED.value
_READY = JobState.READY.value


@dataclass(frozen=True, slots=True)
class JobColumns:
    """A validated batch, one list per column (what the ``unnest`` insert binds)."""

    ids: list[str]
    queues: list[str]
    job_types: list[str]
    payloads: list[dict[str, Any]]
    states: list[str]
    priorities: list[int]
    max_attempts: list[int]
    run_ats: list[datetime]
    unique_keys: list[str | None]

    def row(self, index: int) -> ResolvedJob:
        """One job's columns back as a row (the single-row insert binds a row)."""
        return (
            self.queues[index],
            self.job_types[index],
            self.payloads[index],
            self.states[index],
            self.priorities[index],
            self.max_attempts[index],
            self.run_ats[index],
            self.unique_keys[index],
        )


def job_columns(jobs: Sequence[NewJob], ids: list[str], now: datetime) -> JobColumns:
    """Validate ``jobs`` and lay them out as columns, paying once per distinct job.

    A batch often repeats one ``NewJob`` (``[NewJob(t)] * 1000``) or one payload
    object; each distinct ``NewJob`` is validated once and each distinct payload
    copied once (keyed by identity: ``jobs`` holds them alive for the whole call,
    so an ``id()`` cannot be reused meanwhile). The copy is the snapshot stored,
    so a caller mutating its mapping afterwards does not change the job.
    """
    by_job: dict[int, ResolvedJob] = {}
    copies: dict[int, dict[str, Any]] = {}
    resolved: list[ResolvedJob] = []
    append = resolved.append
    for job in jobs:
        row = by_job.get(id(job))
        if row is None:
            payload = copies.get(id(job.payload))
            if payload is None:
                payload = copies[id(job.payload)] = dict(job.payload)
            row = by_job[id(job)] = resolve_job(
                job.job_type,
                payload,
                job.queue,
                job.priority,
                job.run_at,
                job.unique_key,
                job.max_attempts,
                now,
            )
        append(row)
    queues, job_types, payloads, states, priorities, max_attempts, run_ats, unique_keys = (
        list(column) for column in zip(*resolved, strict=True)
    )
    return JobColumns(
        ids, queues, job_types, payloads, states, priorities, max_attempts, run_ats, unique_keys
    )


def payload_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload) if payload else "{}"


def postgresql_parameters(
    columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
) -> tuple[Any, ...]:
    """The bound parameters of ``INSERT_JOBS_POSTGRESQL`` (one array per column).

    Each distinct payload object is JSON-encoded once (``job_columns`` already
    shares one copy between the jobs that shared a payload).
    """
    encoded: dict[int, str] = {}
    payloads: list[str] = []
    append = payloads.append
    for payload in columns.payloads:
        text = encoded.get(id(payload))
        if text is None:
            text = encoded[id(payload)] = payload_json(payload)
        append(text)
    return (
        columns.ids,
        columns.queues,
        columns.job_types,
        payloads,
        columns.states,
        columns.priorities,
        columns.max_attempts,
        columns.run_ats,
        columns.unique_keys,
        json.dumps(trace_context),
        now,
    )


def postgresql_row_parameters(
    job_id: str, row: ResolvedJob, now: datetime, trace_context: Mapping[str, str]
) -> tuple[Any, ...]:
    """The bound parameters of ``INSERT_JOB_POSTGRESQL`` for one job."""
    queue, job_type, payload, state, priority, max_attempts, run_at, unique_key = row
    return (
        job_id,
        queue,
        job_type,
        payload_json(payload),
        state,
        priority,
        max_attempts,
        run_at,
        unique_key,
        json.dumps(trace_context),
        now,
    )


async def _insert_postgresql(
    connection: AsyncConnection,
    columns: JobColumns,
    now: datetime,
    trace_context: dict[str, str],
) -> set[str]:
    """One INSERT statement for the whole batch; returns the ids inserted.

    One job takes the single-row statement, a batch the ``unnest`` one; either
    without ``ON CONFLICT`` when no job has a ``unique_key`` (and a batch then
    without ``RETURNING``: every row is inserted).
    """
    if len(columns.ids) == 1:
        statement = queries.insert_job_statement(columns.unique_keys[0])
        parameters = postgresql_row_parameters(columns.ids[0], columns.row(0), now, trace_context)
    elif any(key is not None for key in columns.unique_keys):
        statement = queries.INSERT_JOBS_POSTGRESQL
        parameters = postgresql_parameters(columns, now, trace_context)
    else:
        parameters = postgresql_parameters(columns, now, trace_context)
        await connection.exec_driver_sql(queries.INSERT_UNKEYED_JOBS_POSTGRESQL, parameters)
        return set(columns.ids)  # nothing can conflict: every row went in
    result = await connection.exec_driver_sql(statement, parameters)
    return {id_ for (id_,) in result}


async def _insert_core(
    connection: AsyncConnection,
    columns: JobColumns,
    now: datetime,
    trace_context: dict[str, str],
) -> set[str]:
    values = [
        {
            "id": job_id,
            "queue": queue,
            "job_type": job_type,
            "payload": payload,
            "state": state,
            "priority": priority,
            "attempt": 0,
            "max_attempts": attempts,
            "run_at": due,
            "unique_key": key,
            "lease_owner": None,
            "lease_expires_at": None,
            "trace_context": trace_context,
            "last_error": None,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
        }
        for job_id, queue, job_type, payload, state, priority, attempts, due, key in zip(
            columns.ids,
            columns.queues,
            columns.job_types,
            columns.payloads,
            columns.states,
            columns.priorities,
            columns.max_attempts,
            columns.run_ats,
            columns.unique_keys,
            strict=True,
        )
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
    columns = job_columns(jobs, new_ids(len(jobs)), now)
    # The session's own connection, so the jobs join the caller's transaction;
    # no ORM unit of work, no per-call compilation on PostgreSQL.
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        inserted = await _insert_postgresql(connection, columns, now, trace_context)
    else:
        inserted = await _insert_core(connection, columns, now, trace_context)
    if len(inserted) == len(columns.ids):
        return columns.ids
    ids = list(columns.ids)
    keys_by_index = columns.unique_keys
    missing = [i for i, job_id in enumerate(ids) if job_id not in inserted]
    keys = sorted({key for i in missing if (key := keys_by_index[i]) is not None})
    found = {
        row.unique_key: row.id for row in await session.execute(queries.ids_by_unique_key(keys))
    }
    for index in missing:
        ids[index] = found[keys_by_index[index]]
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

"""The queue's API: enqueueing, and the operator's actions on jobs.

One way to enqueue, whatever the caller holds: ``enqueue(into, …)`` for one job
and an :class:`Enqueuer` for many. ``into`` says where the job commits:

- an ``AsyncSession``: in the caller's transaction. The job commits with the
  caller's own writes or not at all — no lost job when the caller commits, no
  phantom job when it rolls back. This is the form for any job that belongs to a
  write.
- a :class:`~keel.db.engine.Database`: committed when the call returns, for a
  caller with nothing else to write (a CLI command, a fan-out); on PostgreSQL
  ONE autocommit statement, not a transaction around one row.
- any :class:`~keel.jobs.connector.JobConnector` (the memory one in tests).

On PostgreSQL a trigger (migrations 0004 and 0007) sends ``NOTIFY keel_jobs`` for
every row that becomes ``ready``; PostgreSQL delivers it at commit, so a worker
wakes only for jobs that exist. Everything here speaks to the store through the
connector seam (:mod:`keel.jobs.connector`); the SQL lives in :mod:`keel.jobs.sql`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import propagate
from sqlalchemy.ext.asyncio import AsyncSession

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.errors import InvalidInput
from keel.ids import new_ids
from keel.jobs import sql
from keel.jobs.connector import (
    JobColumns,
    JobConnector,
    JobInserter,
    JobRecord,
    QueueStats,
    ResolvedJob,
)
from keel.jobs.registry import DEFAULT_QUEUE, JobType
from keel.jobs.retry import RetryPolicy
from keel.jobs.states import FINISHED, QUEUED, JobState

DEFAULT_POLICY = RetryPolicy()
TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")


@dataclass(frozen=True)
class NewJob:
    """One job of a batch for :meth:`Enqueuer.enqueue_many`."""

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


def _one(
    job_type: JobType | str,
    payload: Mapping[str, Any] | None,
    queue: str | None,
    priority: int,
    run_at: datetime | None,
    unique_key: str | None,
    max_attempts: int | None,
    now: datetime,
) -> JobColumns:
    """One job validated and laid out as a batch of one (no ``NewJob`` to resolve)."""
    queue_name, name, body, state, rank, attempts, due, key = resolve_job(
        job_type,
        dict(payload) if payload else {},
        queue,
        priority,
        run_at,
        unique_key,
        max_attempts,
        now,
    )
    return JobColumns(
        new_ids(1), [queue_name], [name], [body], [state], [rank], [attempts], [due], [key]
    )


Store = AsyncSession | Database | JobConnector
"""Where jobs are added, read and changed: a caller's session (its transaction),
the database on its own, or any job store."""


def connector_for(store: Database | JobConnector) -> JobConnector:
    """The connector of a store: the SQL one over a :class:`Database`."""
    return sql.sql_connector(store) if isinstance(store, Database) else store


def _inserter(into: Store) -> JobInserter:
    if isinstance(into, AsyncSession):
        return sql.SessionInserter(into)
    return connector_for(into).inserter()


async def enqueue(
    into: Store,
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
    """Add one job; returns its id. See the module for what ``into`` decides.

    When ``unique_key`` is taken, nothing is added and the id of the job holding
    it is returned. Bad input raises before anything reaches the store.
    """
    now = clock.now()
    columns = _one(job_type, payload, queue, priority, run_at, unique_key, max_attempts, now)
    trace_context = current_trace_context()
    if isinstance(into, AsyncSession):
        ids = await sql.insert_in_session(into, columns, now, trace_context)
    else:
        ids = await connector_for(into).insert(columns, now, trace_context)
    return ids[0]


class Enqueuer:
    """Many jobs into one destination, one at a time or in batches.

    Into a session, every job joins its transaction. Into a database or store,
    each call commits when it returns, on ONE connection held for the ``async
    with`` block on PostgreSQL (the pool's checkout is paid once per run, not once
    per job; a connection that died is replaced). Hold it for a burst, not for
    the life of the process: the connection is out of the pool meanwhile. Tasks
    may share one; their statements go one at a time on its connection.
    """

    def __init__(self, into: Store, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._inserter = _inserter(into)
        self._clock = clock

    async def __aenter__(self) -> Enqueuer:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._inserter.close()

    async def enqueue(
        self,
        job_type: JobType | str,
        payload: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Add one job; returns its id (or the key holder's)."""
        now = self._clock.now()
        columns = _one(job_type, payload, queue, priority, run_at, unique_key, max_attempts, now)
        return (await self._inserter.insert(columns, now, current_trace_context()))[0]

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[str]:
        """Add a batch in one statement; one id per job, in order.

        A job whose ``unique_key`` is already taken is not added again: its place
        in the result holds the id of the job that has the key.
        """
        if not jobs:
            return []
        now = self._clock.now()
        columns = job_columns(jobs, new_ids(len(jobs)), now)
        return await self._inserter.insert(columns, now, current_trace_context())


# --- reading and operator actions ------------------------------------------------------


async def get(source: Store, job_id: str) -> JobRecord:
    if isinstance(source, AsyncSession):
        return await sql.get_in_session(source, job_id)
    return await connector_for(source).get(job_id)


async def list_jobs(
    source: Store,
    *,
    state: JobState | None = None,
    queue: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
) -> list[JobRecord]:
    if isinstance(source, AsyncSession):
        return await sql.list_in_session(
            source, state=state, queue=queue, job_type=job_type, limit=limit
        )
    return await connector_for(source).list_jobs(
        state=state, queue=queue, job_type=job_type, limit=limit
    )


async def stats(source: Store, now: datetime) -> list[QueueStats]:
    if isinstance(source, AsyncSession):
        return await sql.stats_in_session(source, now)
    return await connector_for(source).stats(now)


async def cancel(source: Store, job_id: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
    """Cancel a queued job; a running or finished job cannot be cancelled."""
    if isinstance(source, AsyncSession):
        await sql.cancel_in_session(source, job_id, clock.now())
    else:
        await connector_for(source).cancel(job_id, clock.now())


async def requeue_dead(
    source: Store, job_ids: Sequence[str] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Dead jobs back to ``ready`` with their attempts reset; ``None`` means every dead job."""
    if isinstance(source, AsyncSession):
        return await sql.requeue_dead_in_session(source, job_ids, clock.now())
    return await connector_for(source).requeue_dead(job_ids, clock.now())


async def _purge(
    source: Store,
    states: Sequence[JobState],
    *,
    finished_before: datetime | None = None,
    job_ids: Sequence[str] | None = None,
) -> int:
    if isinstance(source, AsyncSession):
        return await sql.purge_in_session(
            source, states, finished_before=finished_before, job_ids=job_ids
        )
    return await connector_for(source).purge(
        states, finished_before=finished_before, job_ids=job_ids
    )


async def purge_dead(
    source: Store,
    *,
    job_ids: Sequence[str] | None = None,
    older_than: timedelta | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Delete dead jobs: the ones named, or those dead for longer than ``older_than``."""
    if job_ids is not None:
        return await _purge(source, [JobState.DEAD], job_ids=job_ids)
    cutoff = clock.now() - (older_than or timedelta(0))
    return await _purge(source, [JobState.DEAD], finished_before=cutoff)


async def purge_finished(
    source: Store, *, older_than: timedelta, clock: Clock = SYSTEM_CLOCK
) -> int:
    """Delete succeeded and cancelled jobs finished longer ago than ``older_than``.

    Dead jobs stay until an operator requeues or purges them.
    """
    states = [s for s in FINISHED if s is not JobState.DEAD]
    return await _purge(source, states, finished_before=clock.now() - older_than)


__all__ = [
    "QUEUED",
    "Enqueuer",
    "NewJob",
    "QueueStats",
    "Store",
    "cancel",
    "connector_for",
    "current_trace_context",
    "enqueue",
    "get",
    "list_jobs",
    "purge_dead",
    "purge_finished",
    "requeue_dead",
    "stats",
]

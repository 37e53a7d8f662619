"""Every statement the queue runs, each with a name, reviewed as data.

Most statements are SQLAlchemy Core so one text serves both dialects where it
can; where the dialects differ (the claim) there is one named statement per
dialect. The two hot paths on PostgreSQL — enqueue and claim — are hand-written
SQL constants (``INSERT_JOBS_POSTGRESQL`` and its variants, ``CLAIM_POSTGRESQL``) with bound
parameters: nothing to compile or cache-key per call, one prepared statement
per connection. Each state-changing statement takes its source states from the one
transition table in :mod:`keel.jobs.states`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Delete,
    Select,
    Table,
    Update,
    and_,
    case,
    delete,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from keel.db.tables_jobs import Job, JobSchedule
from keel.db.types import UTCDateTime
from keel.jobs.connector import LEASE_EXPIRED, Lease
from keel.jobs.states import QUEUED, JobState, source_states

jobs: Table = Job.__table__  # type: ignore[assignment]
schedules: Table = JobSchedule.__table__  # type: ignore[assignment]

S = JobState
_CLAIMABLE = source_states(S.RUNNING, QUEUED)


# ``insert_jobs_postgresql``: the enqueue hot path, hand-written so nothing is
# compiled per call. One statement for any number of jobs: each column arrives
# as one array parameter and ``unnest`` zips them back into rows, so a batch of
# 1,000 jobs is one round trip with 9 parameters (not 9,000), and one enqueue
# and a batch share one prepared statement on each connection. Rows whose
# ``unique_key`` is taken are skipped, not an error; RETURNING names the rows
# actually inserted. Parameters: $1 id, $2 queue, $3 job_type, $4 payload
# (JSON text), $5 state, $6 priority, $7 max_attempts, $8 run_at, $9 unique_key
# (arrays, one element per job); $10 trace_context (JSON text), $11 created_at.
_INSERT_JOBS_FROM_ARRAYS = """\
INSERT INTO jobs (id, queue, job_type, payload, state, priority, attempt, max_attempts,
                  run_at, unique_key, trace_context, created_at)
SELECT t.id, t.queue, t.job_type, t.payload::json, t.state, t.priority, 0, t.max_attempts,
       t.run_at, t.unique_key, $10::json, $11::timestamptz
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::text[], $5::varchar[],
            $6::int[], $7::int[], $8::timestamptz[], $9::varchar[])
     AS t(id, queue, job_type, payload, state, priority, max_attempts, run_at, unique_key)
"""

# The conflict rule of every keyed insert. The predicate names the partial unique
# index of migration 0008; PostgreSQL infers as arbiters every unique index that
# covers it, partial or not, so the same text works while 0004's unique
# constraint still exists (between 0008 and 0011) and after it is gone. Without
# the predicate the partial index alone could not be inferred.
_ON_KEY_CONFLICT = "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING\n"

INSERT_JOBS_POSTGRESQL = _INSERT_JOBS_FROM_ARRAYS + _ON_KEY_CONFLICT + "RETURNING id"

# ``insert_unkeyed_jobs_postgresql``: the same insert for a batch in which no job
# has a ``unique_key`` (the common case). Nothing can conflict, and an INSERT
# with ON CONFLICT pays for speculative insertion on every row even so (a
# measurable share of a batch insert: bench/bench_jobs.py). Every row is
# inserted, so there is nothing to RETURN either (reading the ids back costs the
# client time per job). Same parameters ($9 is all
# NULLs), so the two share the code that binds them.
INSERT_UNKEYED_JOBS_POSTGRESQL = _INSERT_JOBS_FROM_ARRAYS


# ``insert_job_postgresql``: the same insert for ONE job, the common case
# (``enqueue`` into a database, a request enqueueing its one job). A plain VALUES row skips
# what the batch form pays for even at one row — nine one-element arrays for
# asyncpg to encode and the server to decode, and a function scan over
# ``unnest`` — about a tenth of the statement's server time on the development
# box. Same columns, same conflict rule, same RETURNING. Parameters: $1 id,
# $2 queue, $3 job_type, $4 payload (JSON text), $5 state, $6 priority,
# $7 max_attempts, $8 run_at, $9 unique_key, $10 trace_context (JSON text),
# $11 created_at.
_INSERT_JOB_VALUES = """\
INSERT INTO jobs (id, queue, job_type, payload, state, priority, attempt, max_attempts,
                  run_at, unique_key, trace_context, created_at)
VALUES ($1, $2, $3, $4::json, $5, $6, 0, $7, $8::timestamptz, $9, $10::json, $11::timestamptz)
"""

INSERT_JOB_POSTGRESQL = _INSERT_JOB_VALUES + _ON_KEY_CONFLICT + "RETURNING id"

# ``insert_unkeyed_job_postgresql``: one job without a ``unique_key``: no
# conflict clause, for the same reason as the batch form; $9 is NULL.
INSERT_UNKEYED_JOB_POSTGRESQL = _INSERT_JOB_VALUES + "RETURNING id"


def insert_job_statement(unique_key: str | None) -> str:
    """The single-row insert for a job with this ``unique_key`` (or none)."""
    return INSERT_UNKEYED_JOB_POSTGRESQL if unique_key is None else INSERT_JOB_POSTGRESQL


# ``id_by_unique_key_postgresql``: the job holding a key, after an autocommit enqueue's
# insert met it (a second statement only on that path).
ID_BY_UNIQUE_KEY_POSTGRESQL = "SELECT id FROM jobs WHERE unique_key = $1"

# ``ids_by_unique_keys_postgresql``: the holders of the keys a batch insert met.
IDS_BY_UNIQUE_KEYS_POSTGRESQL = (
    "SELECT id, unique_key FROM jobs WHERE unique_key = ANY($1::varchar[])"
)


def insert_jobs(dialect: str) -> Insert:
    """``insert_jobs``: the same insert as Core, for SQLite (the embedded, small-scale case).

    Executed with a list of rows: SQLAlchemy's "insertmanyvalues" sends them as
    multi-row INSERTs from one cached compilation. The conflict target carries
    the partial unique index's predicate, as :data:`INSERT_JOBS_POSTGRESQL` does.
    """
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(jobs).on_conflict_do_nothing(
        index_elements=["unique_key"], index_where=jobs.c.unique_key.isnot(None)
    )
    return cast(Insert, statement).returning(jobs.c.id)


def ids_by_unique_key(keys: Sequence[str]) -> Select[tuple[str, str | None]]:
    return select(jobs.c.id, jobs.c.unique_key).where(jobs.c.unique_key.in_(keys))


def _due(queue: str, now: datetime) -> Any:
    return and_(jobs.c.queue == queue, jobs.c.state.in_(_CLAIMABLE), jobs.c.run_at <= now)


def _claim_values(worker: str, now: datetime, lease_until: datetime) -> dict[str, Any]:
    return {
        "state": S.RUNNING.value,
        "attempt": jobs.c.attempt + 1,
        "lease_owner": worker,
        "lease_expires_at": lease_until,
        "started_at": now,
    }


_ORDER = (jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)


def _sql_states(states: Sequence[str]) -> str:
    return ", ".join(f"'{state}'" for state in states)


# ``claim_postgresql``: the worker's hot path, one prepared statement per
# connection whatever the batch. The inner SELECT takes the due rows with
# ``FOR UPDATE SKIP LOCKED``, so two workers never claim one row and never wait
# on each other's candidates; the UPDATE … RETURNING hands back the claimed rows
# with their new attempt number. Piggybacked on it, the attempts this worker
# finished since its last claim ($6 ids, $7 attempts, fenced like
# ``mark_succeeded_many``) are recorded by a data-modifying CTE, so a job costs one
# commit, not two; the rows being claimed are queued, never these. Parameters:
# $1 queue, $2 limit, $3 worker, $4 now, $5 lease until.
CLAIM_POSTGRESQL = f"""\
WITH done AS (
    UPDATE jobs
    SET state = '{S.SUCCEEDED.value}', finished_at = $4::timestamptz,
        lease_owner = NULL, lease_expires_at = NULL, last_error = NULL
    FROM unnest($6::varchar[], $7::int[]) AS finished(id, attempt)
    WHERE jobs.id = finished.id AND jobs.attempt = finished.attempt
      AND jobs.state IN ({_sql_states(source_states(S.SUCCEEDED, frozenset({S.RUNNING})))})
      AND jobs.lease_owner = $3
    RETURNING jobs.id
)
UPDATE jobs
SET state = '{S.RUNNING.value}', attempt = attempt + 1, lease_owner = $3,
    lease_expires_at = $5::timestamptz, started_at = $4::timestamptz
WHERE id IN (
    SELECT id FROM jobs
    WHERE queue = $1 AND state IN ({_sql_states(_CLAIMABLE)}) AND run_at <= $4::timestamptz
    ORDER BY priority DESC, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING id, job_type, queue, attempt, max_attempts, payload, trace_context, priority, run_at"""  # noqa: S608 - only JobState values are interpolated, never input


def claim_postgresql_parameters(
    queue: str,
    limit: int,
    worker: str,
    now: datetime,
    lease_until: datetime,
    succeeded: Sequence[tuple[str, int]] = (),
) -> tuple[Any, ...]:
    """The bound parameters of :data:`CLAIM_POSTGRESQL`, in order."""
    return (
        queue,
        limit,
        worker,
        now,
        lease_until,
        [job_id for job_id, _attempt in succeeded],
        [attempt for _job_id, attempt in succeeded],
    )


def any_due(queue: str, now: datetime) -> Select[tuple[str]]:
    """``any_due``: one claimable job of ``queue``, if any — the look a SQLite worker
    takes, as a read that never waits for the write lock, before it claims."""
    return select(jobs.c.id).where(_due(queue, now)).limit(1)


def claim_sqlite(
    queue: str, limit: int, worker: str, now: datetime, lease_until: datetime
) -> Update:
    """``claim_sqlite``: the same claim inside a ``BEGIN IMMEDIATE`` transaction.

    SQLite has one writer at a time, so the write lock taken by BEGIN IMMEDIATE
    is what keeps two workers off the same row.
    """
    candidates = select(jobs.c.id).where(_due(queue, now)).order_by(*_ORDER).limit(limit)
    return (
        update(jobs)
        .where(jobs.c.id.in_(candidates.scalar_subquery()))
        .values(_claim_values(worker, now, lease_until))
        .returning(*jobs.c)
    )


def _held(lease: Lease) -> Any:
    """The fencing condition: this worker still holds this attempt's lease."""
    return and_(
        jobs.c.id == lease.job_id,
        jobs.c.state == S.RUNNING.value,
        jobs.c.lease_owner == lease.worker,
        jobs.c.attempt == lease.attempt,
    )


def renew_leases(job_ids: Sequence[str], worker: str, lease_until: datetime) -> Update:
    """``renew_leases``: the heartbeat; returns the ids whose lease this worker still holds."""
    return (
        update(jobs)
        .where(
            jobs.c.id.in_(job_ids),
            jobs.c.state == S.RUNNING.value,
            jobs.c.lease_owner == worker,
        )
        .values(lease_expires_at=lease_until)
        .returning(jobs.c.id)
    )


def mark_succeeded_many(succeeded: Sequence[tuple[str, int]], worker: str, now: datetime) -> Update:
    """``mark_succeeded_many``: finished (job id, attempt) pairs, each fenced on this
    worker still holding that attempt's lease."""
    source_states(S.SUCCEEDED, frozenset({S.RUNNING}))
    return (
        update(jobs)
        .where(
            tuple_(jobs.c.id, jobs.c.attempt).in_(list(succeeded)),
            jobs.c.state == S.RUNNING.value,
            jobs.c.lease_owner == worker,
        )
        .values(
            state=S.SUCCEEDED.value,
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
            last_error=None,
        )
        .returning(jobs.c.id)
    )


def mark_failed(
    lease: Lease,
    *,
    state: JobState,
    run_at: datetime | None,
    error: str,
    now: datetime,
) -> Update:
    """``mark_failed``: to ``retrying`` (with its next ``run_at``) or ``dead``."""
    source_states(state, frozenset({S.RUNNING}))
    values: dict[str, Any] = {
        "state": state.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": error,
    }
    if run_at is not None:
        values["run_at"] = run_at
    if state is S.DEAD:
        values["finished_at"] = now
    return update(jobs).where(_held(lease)).values(values)


def mark_deferred(lease: Lease, *, run_at: datetime, reason: str) -> Update:
    """``mark_deferred``: to ``retrying`` at ``run_at`` with the attempt handed back.

    The handler could not try (see ``JobDeferred``), so, as in :func:`release`, the
    attempt does not count.
    """
    source_states(S.RETRYING, frozenset({S.RUNNING}))
    return (
        update(jobs)
        .where(_held(lease))
        .values(
            state=S.RETRYING.value,
            attempt=jobs.c.attempt - 1,
            run_at=run_at,
            lease_owner=None,
            lease_expires_at=None,
            last_error=reason,
        )
    )


def release(job_ids: Sequence[str], worker: str) -> Update:
    """``release``: jobs interrupted by a graceful shutdown go back to ``ready``.

    The interrupted attempt is handed back (attempt − 1): stopping a worker is
    not the job's failure.
    """
    source_states(S.READY, frozenset({S.RUNNING}))
    return (
        update(jobs)
        .where(
            jobs.c.id.in_(job_ids),
            jobs.c.state == S.RUNNING.value,
            jobs.c.lease_owner == worker,
        )
        .values(
            state=S.READY.value,
            attempt=jobs.c.attempt - 1,
            lease_owner=None,
            lease_expires_at=None,
        )
    )


def reclaim_expired(now: datetime) -> Update:
    """``reclaim_expired``: a running job whose lease ran out lost its worker.

    It goes back to ``ready`` (runnable at once), and the lost attempt counts: a
    job that keeps killing its worker ends ``dead`` instead of looping forever.
    """
    source_states(S.READY, frozenset({S.RUNNING}))
    source_states(S.DEAD, frozenset({S.RUNNING}))
    exhausted = jobs.c.attempt >= jobs.c.max_attempts
    return (
        update(jobs)
        .where(jobs.c.state == S.RUNNING.value, jobs.c.lease_expires_at < now)
        .values(
            state=case((exhausted, S.DEAD.value), else_=S.READY.value),
            finished_at=case((exhausted, literal(now, UTCDateTime())), else_=None),
            run_at=now,
            lease_owner=None,
            lease_expires_at=None,
            last_error=LEASE_EXPIRED,
        )
        .returning(
            jobs.c.id,
            jobs.c.job_type,
            jobs.c.state,
            jobs.c.queue,
            jobs.c.attempt,
            jobs.c.max_attempts,
            jobs.c.payload,
        )
    )


def cancel(job_id: str, now: datetime) -> Update:
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.in_(source_states(S.CANCELLED, QUEUED)))
        .values(state=S.CANCELLED.value, finished_at=now)
    )


def requeue_dead(job_ids: Sequence[str] | None, now: datetime) -> Update:
    """``requeue_dead``: dead jobs back to ``ready`` with a fresh set of attempts."""
    statement = update(jobs).where(jobs.c.state.in_(source_states(S.READY, frozenset({S.DEAD}))))
    if job_ids is not None:
        statement = statement.where(jobs.c.id.in_(job_ids))
    return statement.values(state=S.READY.value, attempt=0, run_at=now, finished_at=None).returning(
        jobs.c.id
    )


def purge(states: Sequence[JobState], finished_before: datetime) -> Delete:
    return delete(jobs).where(
        jobs.c.state.in_([s.value for s in states]), jobs.c.finished_at < finished_before
    )


def purge_ids(job_ids: Sequence[str], states: Sequence[JobState]) -> Delete:
    return delete(jobs).where(jobs.c.id.in_(job_ids), jobs.c.state.in_([s.value for s in states]))


def depth_by_queue_and_state() -> Select[tuple[str, str, int]]:
    return select(jobs.c.queue, jobs.c.state, func.count()).group_by(jobs.c.queue, jobs.c.state)


def oldest_due(now: datetime) -> Select[tuple[str, datetime | None]]:
    """``oldest_due``: per queue, the ``run_at`` of the longest-waiting claimable job."""
    return (
        select(jobs.c.queue, func.min(jobs.c.run_at))
        .where(jobs.c.state.in_(_CLAIMABLE), jobs.c.run_at <= now)
        .group_by(jobs.c.queue)
    )


def ensure_schedule(dialect: str, name: str) -> Insert:
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(schedules).values(name=name)
    return cast(Insert, statement.on_conflict_do_nothing(index_elements=["name"]))


def claim_slot(name: str, slot: datetime) -> Update:
    """``claim_slot``: of any number of workers, one moves the schedule to ``slot``."""
    return (
        update(schedules)
        .where(
            schedules.c.name == name,
            (schedules.c.last_slot.is_(None)) | (schedules.c.last_slot < slot),
        )
        .values(last_slot=slot)
    )


def record_slot_job(name: str, job_id: str) -> Update:
    return update(schedules).where(schedules.c.name == name).values(last_job_id=job_id)

"""The job queue on SQLite and PostgreSQL: the one module that runs the queue's SQL.

:class:`SqlJobConnector` carries out every step of :class:`~keel.jobs.connector.JobConnector`
with the statements named in :mod:`keel.jobs.queries`; :func:`insert_in_session`
is the enqueue that joins a caller's transaction (a job that belongs to a write
commits with it).

A worker's claims, heartbeats and outcome writes are each ONE statement (the
claim is a CTE plus UPDATE … RETURNING), atomic on its own, on a hot path. On
PostgreSQL a worker's connector keeps its own small pool in autocommit, without
pre-ping or reset-on-return: one round trip per statement instead of four (ping,
BEGIN, statement, COMMIT). A dead connection fails one statement, which the
worker's loops already retry. On SQLite the writes go through the service's
engine with ``BEGIN IMMEDIATE`` (SQLite has one writer; the write lock is the
claim's lock). Writes that must commit with other work — a death and its
``on_dead``, a schedule's slot and its job — run in one transaction of the
service's database instead.

Enqueueing with no transaction to join is ONE autocommit statement on PostgreSQL
with asyncpg: the prepared single-row INSERT, sent on the asyncpg connection of a
connection from the main pool with no ``AsyncConnection`` around it
(:meth:`keel.db.engine.Database.on_autocommit_driver`), or on one connection held
for a run of them (:class:`keel.db.engine.HeldDriver`). The statement-level
trigger of migration 0007 still sends ``NOTIFY keel_jobs`` when it commits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from keel.db.engine import _IMMEDIATE, Database, HeldDriver, on_pooled_driver
from keel.db.failures import is_unavailable
from keel.db.tables_jobs import Job
from keel.errors import DatabaseUnavailable, NotFound
from keel.ids import is_valid_id
from keel.jobs import queries
from keel.jobs.connector import (
    ClaimedJob,
    JobColumns,
    JobRecord,
    QueueStats,
    ReclaimedJob,
    ReclaimHook,
    ResolvedJob,
    TransactionHook,
)
from keel.jobs.errors import JobStoreUnavailable
from keel.jobs.states import JobState, check

T = TypeVar("T")

# The holder of a key can be purged between the insert that met it and the read
# that looks for it; the insert is then simply tried again, a bounded number of times.
_KEY_RACE_ATTEMPTS = 3


# --- parameters of the hand-written PostgreSQL inserts --------------------------


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


def _with_holders(columns: JobColumns, inserted: set[str], found: Mapping[str, str]) -> list[str]:
    """The batch's ids with each job that was not inserted replaced by its key's holder."""
    ids = list(columns.ids)
    for index, job_id in enumerate(ids):
        if job_id not in inserted:
            ids[index] = found[columns.unique_keys[index]]  # type: ignore[index]
    return ids


def _missing_keys(columns: JobColumns, inserted: set[str]) -> list[str]:
    return sorted(
        {
            key
            for job_id, key in zip(columns.ids, columns.unique_keys, strict=True)
            if job_id not in inserted and key is not None
        }
    )


# --- enqueueing in a caller's transaction ------------------------------------------


async def _insert_postgresql(
    connection: AsyncConnection, columns: JobColumns, now: datetime, trace: Mapping[str, str]
) -> set[str]:
    """One INSERT statement for the whole batch; returns the ids inserted.

    One job takes the single-row statement, a batch the ``unnest`` one; either
    without ``ON CONFLICT`` when no job has a ``unique_key`` (and a batch then
    without ``RETURNING``: every row is inserted).
    """
    if len(columns.ids) == 1:
        statement = queries.insert_job_statement(columns.unique_keys[0])
        parameters = postgresql_row_parameters(columns.ids[0], columns.row(0), now, trace)
    elif any(key is not None for key in columns.unique_keys):
        statement = queries.INSERT_JOBS_POSTGRESQL
        parameters = postgresql_parameters(columns, now, trace)
    else:
        parameters = postgresql_parameters(columns, now, trace)
        await connection.exec_driver_sql(queries.INSERT_UNKEYED_JOBS_POSTGRESQL, parameters)
        return set(columns.ids)  # nothing can conflict: every row went in
    result = await connection.exec_driver_sql(statement, parameters)
    return {id_ for (id_,) in result}


async def _insert_core(
    connection: AsyncConnection, columns: JobColumns, now: datetime, trace: Mapping[str, str]
) -> set[str]:
    trace_context = dict(trace)
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


async def insert_in_session(
    session: AsyncSession, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
) -> list[str]:
    """Add the jobs in the session's transaction; one id per job (the key holder's
    when its ``unique_key`` is taken)."""
    # The session's own connection, so the jobs join the caller's transaction;
    # no ORM unit of work, no per-call compilation on PostgreSQL.
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        inserted = await _insert_postgresql(connection, columns, now, trace_context)
    else:
        inserted = await _insert_core(connection, columns, now, trace_context)
    if len(inserted) == len(columns.ids):
        return columns.ids
    keys = _missing_keys(columns, inserted)
    found = {
        row.unique_key: row.id for row in await session.execute(queries.ids_by_unique_key(keys))
    }
    return _with_holders(columns, inserted, found)


class SessionInserter:
    """Enqueues into a caller's transaction (what :class:`keel.jobs.Enqueuer` uses
    for a session); closing leaves the transaction to its owner."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        return await insert_in_session(self._session, columns, now, trace_context)

    async def close(self) -> None:
        return None


# --- enqueueing in autocommit on an asyncpg connection -------------------------------


def _driver_insertion(
    columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
) -> Callable[[Any], Awaitable[list[str]]]:
    """What inserts the batch on an asyncpg connection in autocommit (no transaction
    is open there, so the INSERT and its NOTIFY commit with the statement)."""
    if len(columns.ids) == 1:
        job_id, unique_key = columns.ids[0], columns.unique_keys[0]
        parameters = postgresql_row_parameters(job_id, columns.row(0), now, trace_context)
        statement = queries.insert_job_statement(unique_key)

        async def insert_one(driver: Any) -> list[str]:
            for _ in range(_KEY_RACE_ATTEMPTS):
                if await driver.fetchval(statement, *parameters) is not None:
                    return [job_id]
                holder = await driver.fetchval(queries.ID_BY_UNIQUE_KEY_POSTGRESQL, unique_key)
                if holder is not None:
                    return [str(holder)]
            raise DatabaseUnavailable(
                f"unique key {unique_key!r} kept changing hands", retry_after=1
            )

        return insert_one
    batch = postgresql_parameters(columns, now, trace_context)
    keyed = any(key is not None for key in columns.unique_keys)

    async def insert_batch(driver: Any) -> list[str]:
        if not keyed:
            await driver.execute(queries.INSERT_UNKEYED_JOBS_POSTGRESQL, *batch)
            return columns.ids
        inserted = {row[0] for row in await driver.fetch(queries.INSERT_JOBS_POSTGRESQL, *batch)}
        if len(inserted) == len(columns.ids):
            return columns.ids
        rows = await driver.fetch(
            queries.IDS_BY_UNIQUE_KEYS_POSTGRESQL, _missing_keys(columns, inserted)
        )
        return _with_holders(columns, inserted, {row[1]: row[0] for row in rows})

    return insert_batch


class HeldInserter:
    """Enqueues on ONE pooled connection held until :meth:`close` (PostgreSQL with
    asyncpg): the pool's checkout is paid once per run instead of once per job."""

    def __init__(self, database: Database) -> None:
        self._held: HeldDriver = database.held_autocommit_driver()

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        return await self._held.run(_driver_insertion(columns, now, trace_context))

    async def close(self) -> None:
        await self._held.release()


class _TransactionInserter:
    """Enqueues each batch in a short write transaction of its own (SQLite, or
    PostgreSQL without asyncpg)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        async with self._database.write() as session:
            return await insert_in_session(session, columns, now, trace_context)

    async def close(self) -> None:
        return None


# --- the connector -----------------------------------------------------------------


def _claimed(rows: Sequence[Mapping[Any, Any]]) -> list[ClaimedJob]:
    return [
        ClaimedJob(
            id=row["id"],
            job_type=row["job_type"],
            queue=row["queue"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            payload=dict(row["payload"] or {}),
            trace_context=dict(row["trace_context"] or {}),
        )
        for row in sorted(rows, key=lambda r: (-r["priority"], r["run_at"], r["id"]))
    ]


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


def _reclaimed(row: Row[Any]) -> ReclaimedJob:
    return ReclaimedJob(
        id=row.id,
        job_type=row.job_type,
        queue=row.queue,
        state=row.state,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        payload=dict(row.payload or {}),
    )


class SqlJobConnector:
    """The queue in Keel's own database (SQLite or PostgreSQL).

    ``pool_size`` > 0 gives the connector its own autocommit pool on PostgreSQL
    for a worker's statements; with 0 (enqueueing, operator commands, metrics)
    everything goes through the service's pool.
    """

    def __init__(self, database: Database, *, pool_size: int = 0) -> None:
        self.database = database
        self.dialect = database.dialect
        self.asyncpg = database.asyncpg
        self._own: AsyncEngine | None = None
        if database.dialect == "postgresql" and pool_size > 0:
            connect_args: dict[str, Any] = {}
            if database.asyncpg:
                connect_args = {"timeout": 5.0, "command_timeout": 30}
            self._own = create_async_engine(
                database.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=False,
                pool_reset_on_return=None,
                pool_timeout=5.0,
                isolation_level="AUTOCOMMIT",
                connect_args=connect_args,
            )
            self._engine: AsyncEngine | None = self._own
        else:
            self._engine = None  # made at the first write: enqueueing never needs it

    def _write_engine(self) -> AsyncEngine:
        if self._engine is None:
            if self.dialect == "postgresql":
                options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}
            else:
                options = {_IMMEDIATE: True}
            self._engine = self.database.engine.execution_options(**options)
        return self._engine

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A connection for ONE state-changing statement (autocommit on PostgreSQL)."""
        with _unavailable_as_503():
            engine = self._write_engine()
            if self.dialect == "postgresql":
                async with engine.connect() as connection:
                    yield connection
            else:
                async with engine.begin() as connection:
                    yield connection

    async def _execute(self, statement: Any) -> Any:
        async with self._write() as connection:
            return await connection.execute(statement)

    # --- enqueueing -------------------------------------------------------------

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        if not self.asyncpg:
            return await _TransactionInserter(self.database).insert(columns, now, trace_context)
        # A lost connection is a DatabaseUnavailable (``on_autocommit_driver``'s guard),
        # never retried here: without a unique key a resent INSERT could add the job twice.
        return await self.database.on_autocommit_driver(
            _driver_insertion(columns, now, trace_context)
        )

    def inserter(self) -> HeldInserter | _TransactionInserter:
        if self.asyncpg:
            return HeldInserter(self.database)
        return _TransactionInserter(self.database)

    # --- the worker ---------------------------------------------------------------

    async def claim(
        self,
        queue: str,
        limit: int,
        worker: str,
        now: datetime,
        lease_until: datetime,
        succeeded: Sequence[tuple[str, int]] = (),
    ) -> list[ClaimedJob]:
        """On PostgreSQL with asyncpg the claim goes to the driver connection: between
        a NOTIFY and the handler's start it is the only work, and sent there it
        skips SQLAlchemy's ``AsyncConnection``, cursor and result objects. JSON
        columns still arrive decoded: SQLAlchemy set the codecs when it opened the
        connection. On SQLite the successes and the claim share one ``BEGIN
        IMMEDIATE`` transaction.
        """
        if self.dialect == "postgresql":
            parameters = queries.claim_postgresql_parameters(
                queue, limit, worker, now, lease_until, succeeded
            )
            if self.asyncpg:
                return _claimed(
                    await self._on_driver(
                        lambda driver: driver.fetch(queries.CLAIM_POSTGRESQL, *parameters)
                    )
                )
            async with self._write() as connection:
                result = await connection.exec_driver_sql(queries.CLAIM_POSTGRESQL, parameters)
                return _claimed(result.mappings().all())
        async with self._write() as connection:
            if succeeded:
                await connection.execute(queries.mark_succeeded_many(succeeded, worker, now))
            result = await connection.execute(
                queries.claim_sqlite(queue, limit, worker, now, lease_until)
            )
            return _claimed(result.mappings().all())

    async def succeed(
        self, succeeded: Sequence[tuple[str, int]], worker: str, now: datetime
    ) -> int:
        if not succeeded:
            return 0
        result = await self._execute(queries.mark_succeeded_many(succeeded, worker, now))
        return len(result.all())

    async def fail(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        *,
        state: JobState,
        run_at: datetime | None,
        error: str,
        now: datetime,
        on_dead: TransactionHook | None = None,
    ) -> bool:
        statement = queries.mark_failed(
            job_id, worker, attempt, state=state, run_at=run_at, error=error, now=now
        )
        if on_dead is None or state is not JobState.DEAD:
            return bool((await self._execute(statement)).rowcount == 1)
        # In a transaction of the service's database, not on the worker's autocommit
        # connections: the death and its ``on_dead`` commit together.
        async with self.database.write() as session:
            result: Any = await session.execute(statement)
            if result.rowcount != 1:
                return False
            await on_dead(session)
        return True

    async def defer(
        self, job_id: str, worker: str, attempt: int, *, run_at: datetime, reason: str
    ) -> bool:
        statement = queries.mark_deferred(job_id, worker, attempt, run_at=run_at, reason=reason)
        return bool((await self._execute(statement)).rowcount == 1)

    async def renew(self, job_ids: Sequence[str], worker: str, lease_until: datetime) -> set[str]:
        if not job_ids:
            return set()
        result = await self._execute(queries.renew_leases(job_ids, worker, lease_until))
        return {row.id for row in result}

    async def release(self, job_ids: Sequence[str], worker: str) -> None:
        if job_ids:
            await self._execute(queries.release(job_ids, worker))

    async def reclaim(
        self, now: datetime, on_dead: ReclaimHook | None = None
    ) -> list[ReclaimedJob]:
        # A transaction of the service's database: a job dead from its last lease and
        # its type's ``on_dead`` (an export marked failed) commit together.
        async with self.database.write() as session:
            rows = (await session.execute(queries.reclaim_expired(now))).all()
            reclaimed = [_reclaimed(row) for row in rows]
            dead = [job for job in reclaimed if job.state == JobState.DEAD.value]
            if on_dead is not None and dead:
                await on_dead(session, dead)
        return reclaimed

    async def schedule(
        self,
        name: str,
        slot: datetime,
        columns: JobColumns,
        now: datetime,
        trace_context: Mapping[str, str],
    ) -> str | None:
        async with self.database.write() as session:
            await session.execute(queries.ensure_schedule(self.dialect, name))
            claimed: Any = await session.execute(queries.claim_slot(name, slot))
            if claimed.rowcount != 1:
                return None
            (job_id,) = await insert_in_session(session, columns, now, trace_context)
            await session.execute(queries.record_slot_job(name, job_id))
        return job_id

    # --- reading and operating ---------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        async with self.database.read() as session:
            return await get_in_session(session, job_id)

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        async with self.database.read() as session:
            return await list_in_session(
                session, state=state, queue=queue, job_type=job_type, limit=limit
            )

    async def stats(self, now: datetime) -> list[QueueStats]:
        async with self.database.read() as session:
            return await stats_in_session(session, now)

    async def cancel(self, job_id: str, now: datetime) -> None:
        async with self.database.write() as session:
            await cancel_in_session(session, job_id, now)

    async def requeue_dead(self, job_ids: Sequence[str] | None, now: datetime) -> list[str]:
        async with self.database.write() as session:
            return await requeue_dead_in_session(session, job_ids, now)

    async def purge(
        self,
        states: Sequence[JobState],
        *,
        finished_before: datetime | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> int:
        async with self.database.write() as session:
            return await purge_in_session(
                session, states, finished_before=finished_before, job_ids=job_ids
            )

    async def check(self) -> None:
        try:
            async with self.database.read() as session:
                await session.execute(select(queries.jobs.c.id).limit(1))
        except (DatabaseUnavailable, SQLAlchemyError) as error:
            detail = f"the job store cannot be read: {type(error).__name__}"
            raise JobStoreUnavailable(detail) from error

    # --- lifecycle ----------------------------------------------------------------

    async def _on_driver(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work`` on the asyncpg connection of one of the connector's autocommit
        connections. PostgreSQL with asyncpg only."""
        with _unavailable_as_503():
            if self._own is not None:
                return await on_pooled_driver(self._own, work)
            return await self.database.on_autocommit_driver(work)

    async def warm(self, connections: int) -> None:
        """Open ``connections`` of the worker's own connections now, all at once.

        The pool opens connections on demand, so the first time two statements
        overlap (a claim and a success being written) the claim waited for a new
        connection: connect, and SQLAlchemy's type introspection for the JSON
        codecs, tens of milliseconds on a busy server — a stall some early job's
        start paid for, long after the worker had started. Opened here, before
        the first claim, that cost is part of starting the worker.
        """
        if self._own is None or not self.asyncpg or connections < 1:
            return
        ready = asyncio.Event()
        opened = 0

        async def opened_and_held(_driver: Any) -> None:
            nonlocal opened
            opened += 1
            if opened == connections:
                ready.set()
            await ready.wait()  # held until all are open, so each is a new one

        async def hold() -> None:
            try:
                await self._on_driver(opened_and_held)
            finally:
                ready.set()  # one failed: the others let go too, none is left waiting

        await asyncio.gather(*(hold() for _ in range(connections)))

    async def close(self) -> None:
        if self._own is not None:
            await self._own.dispose()


# --- reading and operating in a caller's session ---------------------------------------


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


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """A store that does not answer is a ``DatabaseUnavailable`` (503-shaped, with a
    ``Retry-After``) that the worker's loops retry, never a bare driver error."""
    try:
        yield
    except Exception as error:
        if isinstance(error, DatabaseUnavailable) or not is_unavailable(error):
            raise
        raise DatabaseUnavailable("the job store is not answering", retry_after=2) from error


__all__ = [
    "HeldInserter",
    "SessionInserter",
    "SqlJobConnector",
    "cancel_in_session",
    "get_in_session",
    "insert_in_session",
    "list_in_session",
    "postgresql_parameters",
    "postgresql_row_parameters",
    "purge_in_session",
    "requeue_dead_in_session",
    "stats_in_session",
]

"""What the SQLite and PostgreSQL job stores share: every statement but the hot paths.

The statements are the named ones of :mod:`keel.jobs.queries`. A state change a
worker makes is ONE statement, atomic on its own, sent through :meth:`_write` (a
connection the dialect's subclass chooses). Writes that must commit with other
work — a death and its ``on_dead``, a reclaim and the hooks of the jobs it left
dead, a schedule's slot and its job — run in one transaction of the service's
database instead. Enqueueing, claiming and the worker's connections differ per
database: :class:`~keel.jobs.sql.postgresql.PostgresJobConnector`,
:class:`~keel.jobs.sql.sqlite.SqliteJobConnector`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.db.engine import Database
from keel.db.failures import is_unavailable
from keel.errors import DatabaseUnavailable
from keel.jobs import queries
from keel.jobs.connector import (
    ClaimedJob,
    JobColumns,
    JobInserter,
    JobRecord,
    Lease,
    QueueStats,
    ReclaimedJob,
    ReclaimHook,
    TransactionHook,
)
from keel.jobs.errors import JobStoreUnavailable
from keel.jobs.sql.enqueue import insert_in_session
from keel.jobs.sql.session import (
    cancel_in_session,
    get_in_session,
    list_in_session,
    purge_in_session,
    requeue_dead_in_session,
    stats_in_session,
)
from keel.jobs.states import JobState


class Claim(NamedTuple):
    """One claim's arguments, in the order of :func:`~keel.jobs.queries.claim_sqlite`
    and :func:`~keel.jobs.queries.claim_postgresql_parameters`."""

    queue: str
    limit: int
    worker: str
    now: datetime
    lease_until: datetime
    succeeded: Sequence[tuple[str, int]]


def _claim_order(row: Mapping[Any, Any]) -> tuple[int, datetime, str]:
    return (-row["priority"], row["run_at"], row["id"])


def claimed_jobs(rows: Sequence[Mapping[Any, Any]]) -> list[ClaimedJob]:
    """The claimed rows as jobs, highest priority first, then oldest (``UPDATE …
    RETURNING`` hands them back in no particular order)."""
    if len(rows) > 1:
        rows = sorted(rows, key=_claim_order)
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
        for row in rows
    ]


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


class SqlJobConnector(ABC):
    """The queue in Keel's own database; a subclass per dialect supplies the
    connection for one-statement writes (:meth:`_write`), enqueueing and the claim."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.dialect = database.dialect

    @abstractmethod
    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for ONE state-changing statement, committed when the block ends."""

    @abstractmethod
    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        """Add the jobs, committed when this returns."""

    @abstractmethod
    def inserter(self) -> JobInserter:
        """An inserter for a run of enqueues."""

    async def claim(
        self,
        queue: str,
        limit: int,
        worker: str,
        now: datetime,
        lease_until: datetime,
        succeeded: Sequence[tuple[str, int]] = (),
    ) -> list[ClaimedJob]:
        """Lease due jobs and record ``succeeded``, in one atomic step: the dialect's
        statements (:meth:`_claimed_rows`), the rows handed over in claim order."""
        claim = Claim(queue, limit, worker, now, lease_until, succeeded)
        return claimed_jobs(await self._claimed_rows(claim))

    @abstractmethod
    async def _claimed_rows(self, claim: Claim) -> Sequence[Mapping[Any, Any]]:
        """The rows ``claim`` leased, in any order, its successes recorded in the same
        commit."""

    async def _execute(self, statement: Any) -> Any:
        async with self._write() as connection:
            return await connection.execute(statement)

    async def succeed(
        self, succeeded: Sequence[tuple[str, int]], worker: str, now: datetime
    ) -> int:
        if not succeeded:
            return 0
        result = await self._execute(queries.mark_succeeded_many(succeeded, worker, now))
        return len(result.all())

    async def fail(
        self,
        lease: Lease,
        *,
        state: JobState,
        run_at: datetime | None,
        error: str,
        now: datetime,
        on_dead: TransactionHook | None = None,
    ) -> bool:
        statement = queries.mark_failed(lease, state=state, run_at=run_at, error=error, now=now)
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

    async def defer(self, lease: Lease, *, run_at: datetime, reason: str) -> bool:
        statement = queries.mark_deferred(lease, run_at=run_at, reason=reason)
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

    async def warm(self, connections: int) -> None:
        """Open the worker's connections before the first claim (nothing to do by default)."""
        return

    async def close(self) -> None:
        """Release what the connector opened itself (nothing by default)."""
        return


def store_unavailable(error: Exception) -> DatabaseUnavailable | None:
    """What ``error`` is to the worker: a store that does not answer is a
    ``DatabaseUnavailable`` (503-shaped, with a ``Retry-After``) that its loops retry,
    never a bare driver error; ``None``: not an outage, let it through as it is."""
    if isinstance(error, DatabaseUnavailable) or not is_unavailable(error):
        return None
    return DatabaseUnavailable("the job store is not answering", retry_after=2)


@contextmanager
def unavailable_as_503() -> Iterator[None]:
    """:func:`store_unavailable` around a block (the hot claim path inlines it)."""
    try:
        yield
    except Exception as error:
        unavailable = store_unavailable(error)
        if unavailable is None:
            raise
        raise unavailable from error


__all__ = ["Claim", "SqlJobConnector", "claimed_jobs", "store_unavailable", "unavailable_as_503"]

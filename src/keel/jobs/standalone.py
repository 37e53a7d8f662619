"""Enqueueing for callers with no transaction to join: ``enqueue_now`` and ``Enqueuer``.

:func:`keel.jobs.enqueue` stays the primary API — a job that belongs to a
write must commit with it. But a caller with nothing else to write (a CLI
command, a periodic job fanning out work, an integration that only queues)
would otherwise pay for a whole transaction around one row: on PostgreSQL
BEGIN, the INSERT and COMMIT, plus the session's bookkeeping. Here that is ONE
autocommit statement — the prepared single-row INSERT that ``enqueue`` uses for
one job (``queries.INSERT_JOB_POSTGRESQL``), sent on the asyncpg connection of a
connection from the main pool, with no ``AsyncConnection`` around it
(:meth:`keel.db.engine.Database.on_autocommit_driver`).

The statement-level trigger of migration 0007 still sends ``NOTIFY keel_jobs``,
delivered when the statement commits. ``unique_key`` keeps its meaning: when the
key is taken nothing is inserted and the holder's id is returned (one more
statement, only then). SQLite has no such shortcut worth having; there the job
gets a short write transaction of its own. ``Enqueuer`` sends the same statement
for a run of jobs on one connection it holds, so the pool's checkout is paid
once per run instead of once per job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database, HeldDriver
from keel.errors import DatabaseUnavailable
from keel.ids import new_ids
from keel.jobs import queries
from keel.jobs.queue import (
    current_trace_context,
    enqueue,
    postgresql_row_parameters,
    resolve_job,
)
from keel.jobs.registry import JobType

# The holder of a key can be purged between the insert that met it and the read
# that looks for it; the insert is then simply tried again, a bounded number of times.
_KEY_RACE_ATTEMPTS = 3


async def enqueue_now(
    database: Database,
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
    """Add one job, committed when this returns; returns its id (or the key holder's).

    Not for work that must commit together with other writes: use
    :func:`keel.jobs.enqueue` in that transaction instead. Many jobs in a row,
    each committed on its own: :class:`Enqueuer`.
    """
    if not database.asyncpg:
        async with database.write() as session:
            return await enqueue(
                session,
                job_type,
                payload,
                queue=queue,
                priority=priority,
                run_at=run_at,
                unique_key=unique_key,
                max_attempts=max_attempts,
                clock=clock,
            )
    insert = _insertion(job_type, payload, queue, priority, run_at, unique_key, max_attempts, clock)
    # A lost connection is a DatabaseUnavailable (``on_autocommit_driver``'s guard),
    # never retried here: without a unique key a resent INSERT could add the job twice.
    return await database.on_autocommit_driver(insert)


class Enqueuer:
    """Jobs enqueued one at a time, each committed when its call returns, on ONE
    connection held for the ``async with`` block.

    For a producer that enqueues many jobs in a row with no transaction to join
    (an import, a periodic job fanning out work): :func:`enqueue_now` checks a
    connection out of the pool and back for every job, which is a sixth to a
    quarter of its cost on the development box; here it is checked out at the
    first job and back in when the block ends (:class:`keel.db.engine.HeldDriver`,
    which also replaces a connection that died). Same rows, same unique-key and
    NOTIFY behaviour as :func:`enqueue_now`. On SQLite each job gets a short
    write transaction of its own, as there.

    Hold it for a burst, not for the life of the process: the connection is out
    of the pool for as long as the block runs. Tasks may share one; their jobs
    go one at a time on its connection.
    """

    def __init__(self, database: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._database = database
        self._clock = clock
        self._held: HeldDriver | None = (
            database.held_autocommit_driver() if database.asyncpg else None
        )

    async def __aenter__(self) -> Enqueuer:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._held is not None:
            await self._held.release()

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
        """Add one job, committed when this returns; returns its id (or the key holder's)."""
        if self._held is None:
            return await enqueue_now(
                self._database,
                job_type,
                payload,
                queue=queue,
                priority=priority,
                run_at=run_at,
                unique_key=unique_key,
                max_attempts=max_attempts,
                clock=self._clock,
            )
        insert = _insertion(
            job_type, payload, queue, priority, run_at, unique_key, max_attempts, self._clock
        )
        return await self._held.run(insert)


def _insertion(
    job_type: JobType | str,
    payload: Mapping[str, Any] | None,
    queue: str | None,
    priority: int,
    run_at: datetime | None,
    unique_key: str | None,
    max_attempts: int | None,
    clock: Clock,
) -> Callable[[Any], Awaitable[str]]:
    """Validate one job now (bad input never reaches the database) and return what
    inserts it on an asyncpg connection in autocommit.

    Straight to the statement's parameters: no ``NewJob`` or batch columns for one job.
    """
    now = clock.now()
    row = resolve_job(
        job_type,
        dict(payload) if payload else {},
        queue,
        priority,
        run_at,
        unique_key,
        max_attempts,
        now,
    )
    job_id = new_ids(1)[0]
    parameters = postgresql_row_parameters(job_id, row, now, current_trace_context())
    statement = queries.insert_job_statement(unique_key)

    async def insert(driver: Any) -> str:
        for _ in range(_KEY_RACE_ATTEMPTS):
            # No transaction is open on ``driver``: asyncpg runs the statement in
            # autocommit, so the INSERT and its NOTIFY commit right here.
            if await driver.fetchval(statement, *parameters) is not None:
                return job_id
            holder = await driver.fetchval(queries.ID_BY_UNIQUE_KEY_POSTGRESQL, unique_key)
            if holder is not None:
                return str(holder)
        raise DatabaseUnavailable(f"unique key {unique_key!r} kept changing hands", retry_after=1)

    return insert


__all__ = ["Enqueuer", "enqueue_now"]

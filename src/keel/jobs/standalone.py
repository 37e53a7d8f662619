"""Enqueueing for callers with no transaction to join: ``enqueue_now``.

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
gets a short write transaction of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
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
    :func:`keel.jobs.enqueue` in that transaction instead.
    """
    if database.dialect != "postgresql" or "+asyncpg" not in database.url:
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
    now = clock.now()
    # Straight to the statement's parameters: no ``NewJob`` or batch columns for one job.
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

    # A lost connection is a DatabaseUnavailable (``on_autocommit_driver``'s guard),
    # never retried here: without a unique key a resent INSERT could add the job twice.
    return await database.on_autocommit_driver(insert)


__all__ = ["enqueue_now"]

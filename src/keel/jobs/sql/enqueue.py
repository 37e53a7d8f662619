"""Enqueueing on SQLite and PostgreSQL: into a caller's transaction, or committed at once.

:func:`insert_in_session` is the enqueue that joins a caller's transaction (a job
that belongs to a write commits with it). With no transaction to join, PostgreSQL
with asyncpg sends ONE autocommit statement: the prepared single-row INSERT on the
asyncpg connection of a connection from the main pool, with no ``AsyncConnection``
around it (:meth:`keel.db.engine.Database.on_autocommit_driver`), or on one
connection held for a run of them (:class:`HeldInserter`). The statement-level
trigger of migration 0007 still sends ``NOTIFY keel_jobs`` when it commits.
Elsewhere each batch gets a short write transaction of its own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from keel.db.engine import Database, HeldDriver
from keel.errors import DatabaseUnavailable
from keel.jobs import queries
from keel.jobs.connector import JobColumns, ResolvedJob

# The holder of a key can be purged between the insert that met it and the read
# that looks for it; the insert is then simply tried again, a bounded number of times.
_KEY_RACE_ATTEMPTS = 3


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


# --- into a caller's transaction ------------------------------------------------------


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


# --- committed at once -----------------------------------------------------------------


def driver_insertion(
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
        return await self._held.run(driver_insertion(columns, now, trace_context))

    async def close(self) -> None:
        await self._held.release()


class TransactionInserter:
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


__all__ = [
    "HeldInserter",
    "SessionInserter",
    "TransactionInserter",
    "driver_insertion",
    "insert_in_session",
    "postgresql_parameters",
    "postgresql_row_parameters",
]

"""The job queue on SQLite: one writer at a time, so the write lock is the claim's lock.

Every state change runs under ``BEGIN IMMEDIATE`` on the service's engine: SQLite
admits one writer, and the lock taken at BEGIN IMMEDIATE is what keeps two
workers off the same row. The successes a claim carries and the claim share one
such transaction. There is no autocommit shortcut worth having for enqueueing:
each batch gets a short write transaction of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keel.db.engine import _IMMEDIATE, Database
from keel.jobs import queries
from keel.jobs.connector import JobColumns, JobInserter
from keel.jobs.sql.base import Claim, SqlJobConnector, unavailable_as_503
from keel.jobs.sql.enqueue import TransactionInserter


class SqliteJobConnector(SqlJobConnector):
    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._engine: AsyncEngine = database.engine.execution_options(**{_IMMEDIATE: True})

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        with unavailable_as_503():
            async with self._engine.begin() as connection:
                yield connection

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        return await TransactionInserter(self.database).insert(columns, now, trace_context)

    def inserter(self) -> JobInserter:
        return TransactionInserter(self.database)

    async def _claimed_rows(self, claim: Claim) -> Sequence[Mapping[Any, Any]]:
        """The successes and the claim: two statements in one ``BEGIN IMMEDIATE``.

        With no successes to record, a read first: an idle queue's poll (every
        queue, five times a second) is then one statement that takes neither the
        write lock nor the process's writer turn, instead of a write transaction
        in line with the requests' writes. The claim re-checks what is due under
        the lock; a job that became due after the read waits for the next poll.
        """
        if not claim.succeeded:
            with unavailable_as_503():
                if not await self.database.rows(queries.any_due(claim.queue, claim.now)):
                    return []
        async with self._write() as connection:
            if claim.succeeded:
                await connection.execute(
                    queries.mark_succeeded_many(claim.succeeded, claim.worker, claim.now)
                )
            result = await connection.execute(queries.claim_sqlite(*claim[:5]))
            return result.mappings().all()


__all__ = ["SqliteJobConnector"]

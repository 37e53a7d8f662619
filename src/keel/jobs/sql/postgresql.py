"""The job queue on PostgreSQL: the hot paths, hand-written and sent to the driver.

A worker's connector keeps its own small pool in autocommit, without pre-ping or
reset-on-return: one round trip per statement instead of four (ping, BEGIN,
statement, COMMIT). A dead connection fails one statement, which the worker's
loops already retry. With asyncpg the claim — between a NOTIFY and a handler's
start the only work — goes to the driver connection, skipping SQLAlchemy's
``AsyncConnection``, cursor and result objects (JSON columns still arrive
decoded: SQLAlchemy set the codecs when it opened the connection). Without a
pool of its own (enqueueing, operator commands, metrics) the connector uses the
service's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from keel.db.engine import Database, on_pooled_driver
from keel.jobs import queries
from keel.jobs.connector import JobColumns, JobInserter
from keel.jobs.sql.base import Claim, SqlJobConnector, store_unavailable, unavailable_as_503
from keel.jobs.sql.enqueue import HeldInserter, TransactionInserter, driver_insertion

T = TypeVar("T")


class PostgresJobConnector(SqlJobConnector):
    """``pool_size`` > 0 gives the connector its own autocommit pool for a worker's
    statements; with 0 everything goes through the service's pool."""

    def __init__(self, database: Database, *, pool_size: int = 0) -> None:
        super().__init__(database)
        self.asyncpg = database.asyncpg
        self._own: AsyncEngine | None = None
        if pool_size > 0:
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
        self._engine: AsyncEngine | None = self._own  # else made at the first write

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        with unavailable_as_503():
            if self._engine is None:
                self._engine = self.database.engine.execution_options(isolation_level="AUTOCOMMIT")
            async with self._engine.connect() as connection:
                yield connection

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        if not self.asyncpg:
            return await TransactionInserter(self.database).insert(columns, now, trace_context)
        # A lost connection is a DatabaseUnavailable (``on_autocommit_driver``'s guard),
        # never retried here: without a unique key a resent INSERT could add the job twice.
        return await self.database.on_autocommit_driver(
            driver_insertion(columns, now, trace_context)
        )

    def inserter(self) -> JobInserter:
        if self.asyncpg:
            return HeldInserter(self.database)
        return TransactionInserter(self.database)

    async def _claimed_rows(self, claim: Claim) -> Sequence[Mapping[Any, Any]]:
        """One statement (``CLAIM_POSTGRESQL``) claims and records the successes."""
        parameters = queries.claim_postgresql_parameters(*claim)
        if not self.asyncpg:
            async with self._write() as connection:
                result = await connection.exec_driver_sql(queries.CLAIM_POSTGRESQL, parameters)
                return result.mappings().all()

        # The worker's hot path, between a NOTIFY and a handler's start: on the driver
        # connection, the error translation inlined rather than a context manager.
        def fetch(driver: Any) -> Awaitable[Sequence[Mapping[Any, Any]]]:
            return driver.fetch(queries.CLAIM_POSTGRESQL, *parameters)  # type: ignore[no-any-return]

        try:
            if self._own is not None:
                return await on_pooled_driver(self._own, fetch)
            return await self.database.on_autocommit_driver(fetch)
        except Exception as error:
            unavailable = store_unavailable(error)
            if unavailable is None:
                raise
            raise unavailable from error

    async def _on_driver(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work`` on the asyncpg connection of one of the connector's autocommit
        connections (asyncpg only)."""
        with unavailable_as_503():
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


__all__ = ["PostgresJobConnector"]

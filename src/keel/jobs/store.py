"""The worker's own connections to the job store.

A worker's claims, heartbeats and outcome writes are each ONE statement (the
claim is a CTE plus UPDATE … RETURNING), atomic on its own, on a hot path. On
PostgreSQL the worker keeps its own small pool in autocommit, without pre-ping
or reset-on-return: one round trip per statement instead of four (ping, BEGIN,
statement, COMMIT). A dead connection fails one statement, which the worker's
loops already retry. On SQLite the writes go through the service's engine with
``BEGIN IMMEDIATE`` (SQLite has one writer; the write lock is the claim's lock).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from keel.db.engine import _IMMEDIATE, Database, on_pooled_driver
from keel.db.failures import is_unavailable
from keel.errors import DatabaseUnavailable
from keel.jobs import queries

T = TypeVar("T")


class JobStore:
    def __init__(self, database: Database, *, pool_size: int) -> None:
        self.dialect = database.dialect
        self.asyncpg = database.asyncpg
        self._own: AsyncEngine | None = None
        if database.dialect == "postgresql":
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
            self._engine = self._own
        else:
            self._engine = database.engine.execution_options(**{_IMMEDIATE: True})

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection for ONE state-changing statement (autocommit on PostgreSQL)."""
        with _unavailable_as_503():
            if self._own is not None:
                async with self._own.connect() as connection:
                    yield connection
            else:
                async with self._engine.begin() as connection:
                    yield connection

    async def claim(
        self,
        queue: str,
        limit: int,
        worker: str,
        now: datetime,
        lease_until: datetime,
        succeeded: Sequence[tuple[str, int]],
    ) -> Sequence[Mapping[Any, Any]]:
        """Claim up to ``limit`` due jobs of ``queue`` for ``worker`` and record the
        attempts in ``succeeded`` (job id, attempt) as succeeded, in one write.

        On PostgreSQL with asyncpg the claim goes to the driver connection: between
        a NOTIFY and the handler's start it is the only work, and sent there it
        skips SQLAlchemy's ``AsyncConnection``, cursor and result objects. JSON
        columns still arrive decoded: SQLAlchemy set the codecs when it opened the
        connection.
        """
        if self.dialect == "postgresql":
            parameters = queries.claim_postgresql_parameters(
                queue, limit, worker, now, lease_until, succeeded
            )
            if self.asyncpg:
                return await self._on_driver(
                    lambda driver: driver.fetch(queries.CLAIM_POSTGRESQL, *parameters)
                )
            async with self.write() as connection:
                result = await connection.exec_driver_sql(queries.CLAIM_POSTGRESQL, parameters)
                return result.mappings().all()
        async with self.write() as connection:
            if succeeded:
                await connection.execute(queries.mark_succeeded_many(succeeded, worker, now))
            result = await connection.execute(
                queries.claim_sqlite(queue, limit, worker, now, lease_until)
            )
            return result.mappings().all()

    async def _on_driver(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work`` on the asyncpg connection of one of the worker's own
        (autocommit) connections. PostgreSQL with asyncpg only."""
        if self._own is None or not self.asyncpg:
            raise RuntimeError("JobStore needs PostgreSQL with asyncpg for driver statements")
        with _unavailable_as_503():
            return await on_pooled_driver(self._own, work)

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

    async def dispose(self) -> None:
        if self._own is not None:
            await self._own.dispose()


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

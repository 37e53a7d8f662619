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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from keel.db.engine import _IMMEDIATE, UNAVAILABLE_ERRORS, Database
from keel.errors import DatabaseUnavailable


class JobStore:
    def __init__(self, database: Database, *, pool_size: int) -> None:
        self.dialect = database.dialect
        self._own: AsyncEngine | None = None
        if database.dialect == "postgresql":
            connect_args: dict[str, Any] = {}
            if "+asyncpg" in database.url:
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
        try:
            if self._own is not None:
                async with self._own.connect() as connection:
                    yield connection
            else:
                async with self._engine.begin() as connection:
                    yield connection
        except asyncio.CancelledError:
            raise
        except UNAVAILABLE_ERRORS as error:
            raise DatabaseUnavailable("the job store is not answering", retry_after=2) from error

    async def dispose(self) -> None:
        if self._own is not None:
            await self._own.dispose()

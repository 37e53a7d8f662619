"""The main pool keeps the connections it opens, on PostgreSQL and on a SQLite file.

Up to twice ``pool_size`` connections at once, as a pool of that size with no
overflow: SQLAlchemy closes an overflow connection at checkin, so a steady
load above ``pool_size`` concurrent requests opened and closed a connection
for every few requests — on PostgreSQL a connect, authentication and the
driver's type set-up; on SQLite, whose default was 5 with 10 overflow, an
aiosqlite thread, the PRAGMAs and the SQL function for about every third list
request under 32 concurrent ones (issue 19). An in-memory SQLite database
keeps SQLAlchemy's single static connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import StaticPool
from tests.support.services import PG_HOST, PG_PORT, need

from keel.db.engine import Database


async def _select_one(database: Database) -> None:
    async with database.read() as session:
        await session.execute(text("SELECT 1"))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_connections_opened_above_the_pool_size_are_kept_for_the_next_burst(
    backend: str, tmp_path: Path
) -> None:
    if backend == "postgres":
        need("PostgreSQL", PG_HOST, PG_PORT)
        url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/postgres"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
    database = Database(url, pool_size=2)
    pool: Any = database.engine.sync_engine.pool
    try:
        opened: list[Any] = []
        event.listen(pool, "connect", lambda *_: opened.append(1))
        for _ in range(2):  # two bursts of four concurrent statements
            await asyncio.gather(*(_select_one(database) for _ in range(4)))
        assert len(opened) == 4  # the second burst reused the first one's connections
        assert pool.checkedin() == 4
        assert pool.size() + max(pool._max_overflow, 0) == 4  # still at most 2 × pool_size
    finally:
        await database.dispose()


async def test_an_in_memory_sqlite_database_keeps_its_one_static_connection() -> None:
    database = Database("sqlite+aiosqlite:///:memory:", pool_size=2)
    try:
        assert isinstance(database.engine.sync_engine.pool, StaticPool)
        await _select_one(database)
    finally:
        await database.dispose()

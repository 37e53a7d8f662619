"""The SQLite file pool keeps the connections it opens, as the PostgreSQL pool does.

SQLAlchemy's default for a SQLite file (5, with 10 overflow closed at checkin)
made a steady load above five concurrent requests open a connection — an
aiosqlite thread, the PRAGMAs, the SQL function — for about every third request
(issue 19). An in-memory database keeps SQLAlchemy's single static connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.pool import StaticPool

from keel.db.engine import Database


async def _select_one(database: Database) -> None:
    async with database.query() as session:
        await session.execute(text("SELECT 1"))


async def test_connections_opened_above_the_pool_size_are_kept_for_the_next_burst(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=2)
    pool = database.engine.sync_engine.pool
    try:
        opened: list[Any] = []
        event.listen(pool, "connect", lambda *_: opened.append(1))
        for _ in range(2):  # two bursts of four concurrent reads
            await asyncio.gather(*(_select_one(database) for _ in range(4)))
        assert len(opened) == 4  # the second burst reused the first one's connections
        assert pool.checkedin() == 4  # type: ignore[attr-defined]
        assert pool.size() + max(pool._max_overflow, 0) == 4  # type: ignore[attr-defined]
    finally:
        await database.dispose()


async def test_an_in_memory_database_keeps_its_one_static_connection() -> None:
    database = Database("sqlite+aiosqlite:///:memory:", pool_size=2)
    try:
        assert isinstance(database.engine.sync_engine.pool, StaticPool)
        await _select_one(database)
    finally:
        await database.dispose()

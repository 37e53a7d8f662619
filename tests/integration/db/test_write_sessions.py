"""``Database.write()`` ends its session in place: committed or rolled back, then closed,
its connection back in the pool — also when the COMMIT itself fails."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select, text

from keel.db.engine import Database
from keel.db.tables import Org
from keel.domain import orgs
from keel.errors import DatabaseUnavailable

pytestmark = pytest.mark.postgres


async def _orgs_named(database: Database, name: str) -> int:
    query = select(func.count()).select_from(Org).where(Org.name == name)
    return int((await database.rows(query))[0][0])


async def test_a_committed_write_session_is_closed_and_its_connection_returned(
    database: Database,
) -> None:
    async with database.write() as session:
        org = await orgs.create_org(session, "Closed")
    assert inspect(org).detached  # the session was closed: its identity map emptied
    assert database.engine.sync_engine.pool.checkedout() == 0
    assert await _orgs_named(database, "Closed") == 1


async def test_a_failed_write_rolls_back_closes_and_returns_its_connection(
    database: Database,
) -> None:
    async def create_then_fail() -> None:
        async with database.write() as session:
            await orgs.create_org(session, "Rolled back")
            raise LookupError("after the insert")

    with pytest.raises(LookupError):
        await create_then_fail()
    assert database.engine.sync_engine.pool.checkedout() == 0
    assert await _orgs_named(database, "Rolled back") == 0


async def test_a_commit_that_fails_still_returns_the_connection(database: Database) -> None:
    if database.dialect != "postgresql":
        pytest.skip("a server-side backend to terminate")

    async def commit_on_a_dead_connection() -> None:
        async with database.write() as session:
            await orgs.create_org(session, "Never committed")
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            await database.rows(select(func.pg_terminate_backend(pid)))

    with pytest.raises(DatabaseUnavailable):
        await commit_on_a_dead_connection()
    assert database.engine.sync_engine.pool.checkedout() == 0
    assert await _orgs_named(database, "Never committed") == 0

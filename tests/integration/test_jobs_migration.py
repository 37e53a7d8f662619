"""Revision 0004 builds exactly the job tables the models describe, and comes back out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from tests.support.databases import empty_database

from keel.db import migrate
from keel.db.engine import Database
from keel.db.tables import Base

JOB_TABLES = {"jobs", "job_schedules"}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [
        change
        for change in compare_metadata(context, Base.metadata)
        if JOB_TABLES & set(str(change).split("'"))
    ]


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _check(url: str) -> None:
    database = Database(url)
    try:
        await migrate.upgrade(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
        await migrate.downgrade(database, "0001")
        async with database.engine.connect() as connection:
            assert not JOB_TABLES & await connection.run_sync(_tables)
        await migrate.upgrade(database)
    finally:
        await database.dispose()


def test_0004_matches_the_models_and_downgrades(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        asyncio.run(_check(url))

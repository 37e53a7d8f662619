"""Revision 0003: from empty it gives exactly the audit tables of the models; it undoes cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from tests.support.databases import empty_database

from keel import migrations
from keel.db.engine import Database
from keel.db.tables import Base

AUDIT_TABLES = {"audit_events", "audit_chains", "audit_digests"}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _check(url: str) -> None:
    database = Database(url)
    try:
        await migrations.upgrade(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            assert await connection.run_sync(_tables) >= AUDIT_TABLES
        await migrations.downgrade(database, "0001")
        async with database.engine.connect() as connection:
            assert not AUDIT_TABLES & await connection.run_sync(_tables)
        await migrations.upgrade(database)
        assert await migrations.current_revision(database) == migrations.head_revision()
    finally:
        await database.dispose()


def test_migrating_from_empty_matches_the_models_and_downgrades(
    backend: str, tmp_path: Path
) -> None:
    with empty_database(backend, tmp_path) as url:
        asyncio.run(_check(url))

"""Revisions 0014 and 0017 build exactly the deploy tables the models describe, and come back
out: 0017 (the local runner's records) first, then 0014."""

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
from keel.migrations.script.graph import Scripts

DEPLOY_TABLES = {"releases", "deployments", "deployment_approvals", "deployment_transitions"}
RECORD_TABLES = {"deploy_fronts", "deploy_groups", "deploy_group_processes", "deploy_records"}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [
        change
        for change in compare_metadata(context, Base.metadata)
        if (DEPLOY_TABLES | RECORD_TABLES) & set(str(change).split("'"))
    ]


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _active_index(connection: Connection) -> tuple[bool, str]:
    for index in inspect(connection).get_indexes("deployments"):
        if index["name"] == "ix_deployments_environment_active":
            options = index.get("dialect_options", {})
            where = next((options[key] for key in options if key.endswith("_where")), "")
            return bool(index["unique"]), str(where)
    return False, ""


async def _check(url: str) -> None:
    database = Database(url)
    try:
        await migrations.upgrade(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            unique, where = await connection.run_sync(_active_index)
        assert unique
        assert "finished_at IS NULL" in where.replace("(", "").replace(")", "")
        (records,) = [item for item in Scripts().all() if item.revision == "0017"]
        assert records.down_revision is not None
        await migrations.downgrade(database, records.down_revision)
        async with database.engine.connect() as connection:
            left = await connection.run_sync(_tables)
        assert not RECORD_TABLES & left
        assert left >= DEPLOY_TABLES
        await migrations.downgrade(database, "0013")
        async with database.engine.connect() as connection:
            assert not DEPLOY_TABLES & await connection.run_sync(_tables)
        await migrations.upgrade(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_tables) >= DEPLOY_TABLES | RECORD_TABLES
    finally:
        await database.dispose()


def test_deploy_revision_matches_the_models_and_downgrades(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        asyncio.run(_check(url))

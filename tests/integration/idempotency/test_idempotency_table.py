"""The ``idempotency_keys`` table: its migration, its purge in batches, its CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from tests.support.databases import empty_database

from keel import migrations
from keel.db.engine import Database
from keel.db.tables import Base
from keel.guard.idempotency import KeyRef, purge_expired, sql, store_for

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


async def test_purge_works_in_batches(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "PURGE_BATCH", 3)
    store = store_for(database, lease_seconds=60, retention_seconds=3600)
    for index in range(7):
        await store.claim(
            KeyRef("u", "o", "POST /x", f"k{index}"), owner="a", fingerprint=None, now=T0
        )
    assert await purge_expired(database, T0.replace(year=2027)) == 7


async def test_the_migration_goes_down_and_up_again(database: Database) -> None:
    await migrations.downgrade(database, "0001")
    assert await migrations.current_revision(database) == "0001"
    await migrations.upgrade(database)
    assert await migrations.current_revision(database) == migrations.head_revision()


def test_keel_idempotency_purge_prints_how_many_it_deleted(
    database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "KEEL_DATABASE_URL": database_url, "KEEL_STORAGE_DIR": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from keel.cli import main; main()",
            "idempotency",
            "purge",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"purged": 0}


def test_the_migration_builds_the_table_the_model_describes(backend: str, tmp_path: Path) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [
            diff
            for diff in compare_metadata(context, Base.metadata)
            if "idempotency_keys" in repr(diff)
        ]

    async def migrated_then_compared(url: str) -> list[object]:
        database = Database(url)
        try:
            await migrations.upgrade(database)
            async with database.engine.connect() as connection:
                return await connection.run_sync(differences)
        finally:
            await database.dispose()

    with empty_database(backend, tmp_path) as url:
        assert asyncio.run(migrated_then_compared(url)) == []

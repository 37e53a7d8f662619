"""The job tables' revisions (0004, then 0008–0013's partial indexes) build exactly
what the models describe, and come back out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, inspect, select, text
from tests.support.databases import empty_database

from keel import migrations
from keel.db.engine import Database
from keel.db.tables import Base
from keel.db.tables_jobs import Job
from keel.jobs import enqueue, queue
from keel.jobs.queue import NewJob

JOB_TABLES = {"jobs", "job_schedules"}
# The last revision before the partial indexes, and the one where the old unique
# constraint and the new partial unique index both exist (expand done, contract not).
BEFORE_PARTIAL = "0007"
BOTH_UNIQUE_RULES = "0010"

# Index name -> (columns, unique, predicate).
Indexes = dict[str, tuple[tuple[str, ...], bool, str]]


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [
        change
        for change in compare_metadata(context, Base.metadata)
        if JOB_TABLES & set(str(change).split("'"))
    ]


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _job_indexes(connection: Connection) -> Indexes:
    found: Indexes = {}
    for index in inspect(connection).get_indexes("jobs"):
        if index.get("duplicates_constraint"):
            continue  # PostgreSQL lists a unique constraint's own index too
        options: dict[str, Any] = index.get("dialect_options", {})
        # A string on PostgreSQL, a text clause on SQLite.
        where = next((options[key] for key in options if key.endswith("_where")), "")
        columns = tuple(str(column) for column in index["column_names"])
        found[str(index["name"])] = (columns, bool(index["unique"]), str(where))
    return found


def _job_unique_constraints(connection: Connection) -> set[str]:
    return {str(item["name"]) for item in inspect(connection).get_unique_constraints("jobs")}


async def _shape(database: Database) -> tuple[Indexes, set[str]]:
    async with database.engine.connect() as connection:
        indexes = await connection.run_sync(_job_indexes)
        constraints = await connection.run_sync(_job_unique_constraints)
    return indexes, constraints


PARTIAL_INDEXES = {
    "ix_jobs_unique_key": (("unique_key",), True, "unique_key IS NOT NULL"),
    "ix_jobs_lease_expires_at": (("lease_expires_at",), False, "lease_expires_at IS NOT NULL"),
    "ix_jobs_state_finished_at_partial": (
        ("state", "finished_at"),
        False,
        "finished_at IS NOT NULL",
    ),
}
OLD_INDEXES = {
    "ix_jobs_state_lease_expires_at": (("state", "lease_expires_at"), False, ""),
    "ix_jobs_state_finished_at": (("state", "finished_at"), False, ""),
}
CLAIM_INDEX = {"ix_jobs_queue_state_run_at": (("queue", "state", "run_at"), False, "")}


def _normalised(indexes: Indexes) -> Indexes:
    # PostgreSQL reports a predicate as ``(unique_key IS NOT NULL)``.
    return {
        name: (columns, unique, where.strip("()"))
        for name, (columns, unique, where) in indexes.items()
    }


async def _check(url: str) -> None:
    database = Database(url)
    try:
        await migrations.upgrade(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
        indexes, constraints = await _shape(database)
        assert _normalised(indexes) == CLAIM_INDEX | PARTIAL_INDEXES
        assert constraints == set()

        await migrations.downgrade(database, BEFORE_PARTIAL)
        indexes, constraints = await _shape(database)
        assert _normalised(indexes) == CLAIM_INDEX | OLD_INDEXES
        assert constraints == {"uq_jobs_unique_key"}

        await migrations.downgrade(database, "0001")
        async with database.engine.connect() as connection:
            assert not JOB_TABLES & await connection.run_sync(_tables)
        await migrations.upgrade(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await database.dispose()


def test_job_revisions_match_the_models_and_downgrade(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        asyncio.run(_check(url))


async def _count_jobs(database: Database) -> int:
    async with database.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def _enqueue_duplicates(url: str) -> None:
    database = Database(url)
    try:
        await migrations.upgrade(database, BOTH_UNIQUE_RULES)
        indexes, constraints = await _shape(database)
        assert "ix_jobs_unique_key" in indexes
        assert constraints == {"uq_jobs_unique_key"}

        first = await enqueue(database, "test.record", unique_key="k1")
        again = await enqueue(database, "test.record", unique_key="k1")
        async with database.write() as session:
            in_session = await queue.enqueue(session, "test.record", unique_key="k1")
            batch = await queue.Enqueuer(session).enqueue_many(
                [NewJob("test.record", unique_key="k1"), NewJob("test.record", unique_key="k2")],
            )
            unkeyed = await queue.Enqueuer(session).enqueue_many([NewJob("test.record")] * 2)
        assert first == again == in_session == batch[0]
        assert len({*unkeyed, batch[1], first}) == 4
        assert await _count_jobs(database) == 4
    finally:
        await database.dispose()


def test_a_unique_key_enqueues_once_while_both_unique_rules_exist(
    backend: str, tmp_path: Path
) -> None:
    with empty_database(backend, tmp_path) as url:
        asyncio.run(_enqueue_duplicates(url))


# A concurrent build that failed, as a cancelled or timed-out deploy leaves it:
# two rows break the uniqueness the index asks for, so CREATE UNIQUE INDEX
# CONCURRENTLY fails and leaves an INVALID index of that name behind.
FAILED_BUILD = (
    "CREATE UNIQUE INDEX CONCURRENTLY ix_jobs_unique_key ON jobs (queue) "
    "WHERE unique_key IS NOT NULL"
)


def _validity(connection: Connection) -> tuple[bool, str]:
    row = connection.execute(
        text(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indexrelid = to_regclass('ix_jobs_unique_key')"
        )
    ).one()
    return bool(row[0]), str(row[1])


async def _rebuild_after_failed_attempt(url: str) -> None:
    database = Database(url)
    try:
        await migrations.upgrade(database, BEFORE_PARTIAL)
        for key in ("a", "b"):
            await enqueue(database, "test.record", unique_key=key)
        async with database.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            with pytest.raises(Exception, match="could not create unique index"):
                await autocommit.exec_driver_sql(FAILED_BUILD)
            assert await autocommit.run_sync(_validity) == (
                False,
                "CREATE UNIQUE INDEX ix_jobs_unique_key ON public.jobs USING btree (queue) "
                "WHERE (unique_key IS NOT NULL)",
            )

        await migrations.upgrade(database, "0008")

        async with database.engine.connect() as connection:
            assert await connection.run_sync(_validity) == (
                True,
                "CREATE UNIQUE INDEX ix_jobs_unique_key ON public.jobs USING btree (unique_key) "
                "WHERE (unique_key IS NOT NULL)",
            )
    finally:
        await database.dispose()


def test_a_failed_concurrent_build_is_dropped_and_built_again(backend: str, tmp_path: Path) -> None:
    if backend != "postgres":
        pytest.skip("SQLite builds an index in one transaction: nothing is left half-built")
    with empty_database(backend, tmp_path) as url:
        asyncio.run(_rebuild_after_failed_attempt(url))

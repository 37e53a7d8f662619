"""``enqueue(database, …)``: one job committed on its own, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from keel.db.engine import Database
from keel.db.tables_jobs import Job
from keel.errors import InvalidInput
from keel.jobs import enqueue, queue
from keel.jobs.listener import CHANNEL, asyncpg_dsn
from keel.jobs.registry import JobContext, JobType
from keel.jobs.states import JobState
from keel.testing import ManualClock


async def noop(_context: JobContext) -> None:
    return None


async def count_jobs(database: Database) -> int:
    async with database.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def test_the_job_is_committed_when_enqueue_into_a_database_returns(
    database: Database,
) -> None:
    exports = JobType("test.export", noop, queue="exports")
    job_id = await enqueue(database, exports, {"n": 1}, priority=3)
    async with database.read() as session:
        job = await queue.get(session, job_id)
    assert (job.job_type, job.queue, job.payload, job.priority) == (
        "test.export",
        "exports",
        {"n": 1},
        3,
    )
    assert (job.state, job.attempt, job.max_attempts) == (JobState.READY, 0, 5)


async def test_a_future_run_at_is_scheduled(database: Database) -> None:
    clock = ManualClock()
    later = clock.now().replace(year=clock.now().year + 1)
    job_id = await enqueue(database, "test.record", run_at=later, clock=clock)
    async with database.read() as session:
        assert (await queue.get(session, job_id)).state == JobState.SCHEDULED


async def test_unique_key_enqueues_once_across_both_forms(database: Database) -> None:
    first = await enqueue(database, "test.record", unique_key="k1")
    again = await enqueue(database, "test.record", unique_key="k1")
    async with database.write() as session:
        in_transaction = await queue.enqueue(session, "test.record", unique_key="k1")
        held = await queue.enqueue(session, "test.record", unique_key="k2")
    assert first == again == in_transaction
    assert await enqueue(database, "test.record", unique_key="k2") == held
    assert await count_jobs(database) == 2


async def test_invalid_jobs_are_refused_before_reaching_the_database(database: Database) -> None:
    with pytest.raises(InvalidInput):
        await enqueue(database, "test.record", run_at=datetime(2026, 1, 1))
    with pytest.raises(InvalidInput):
        await enqueue(database, "test.record", max_attempts=0)
    assert await count_jobs(database) == 0


async def in_transaction(driver: Any) -> bool:
    return bool(driver.is_in_transaction())


async def the_driver(driver: Any) -> Any:
    return driver


def only_postgres(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's autocommit path; SQLite uses a write transaction")


async def test_notify_wakes_a_listener(database: Database, backend: str) -> None:
    only_postgres(backend)
    heard: list[str] = []
    listening = await asyncpg.connect(asyncpg_dsn(database.url))
    try:
        await listening.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
        await enqueue(database, "test.record", queue="wake")
        for _ in range(200):
            if heard:
                break
            await asyncio.sleep(0.01)
    finally:
        await listening.close()
    assert heard == ["wake"]


async def test_no_transaction_is_left_open(database: Database, backend: str) -> None:
    only_postgres(backend)
    await enqueue(database, "test.record")
    assert not await database.on_autocommit_driver(in_transaction)


async def test_a_connection_closed_by_the_server_is_replaced(
    database: Database, backend: str
) -> None:
    """The pool has no pre-ping: a pooled connection the server closed must still not fail."""
    only_postgres(backend)
    await enqueue(database, "test.record")
    driver = await database.on_autocommit_driver(the_driver)
    pid = driver.get_server_pid()
    admin = await asyncpg.connect(asyncpg_dsn(database.url))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(200):  # the client sees the EOF once the backend is gone
            if driver.is_closed():
                break
            await asyncio.sleep(0.01)
    finally:
        await admin.close()
    assert driver.is_closed()
    await enqueue(database, "test.record")
    assert await count_jobs(database) == 2

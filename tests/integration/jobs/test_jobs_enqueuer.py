"""``Enqueuer``: many jobs, each committed on its own, on one held connection.

On SQLite and PostgreSQL; the connection-holding checks are PostgreSQL's (SQLite
has no pool worth holding and gives each job a write transaction of its own).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from sqlalchemy import func, select
from tests.support.pg_terminate import terminate_and_wait, terminate_behind_the_loops_back

from keel.db.engine import Database
from keel.db.tables_jobs import Job
from keel.errors import DatabaseUnavailable, InvalidInput
from keel.jobs import Enqueuer, enqueue, queue
from keel.jobs.listener import asyncpg_dsn
from keel.jobs.sql import HeldInserter
from keel.jobs.states import JobState


async def count_jobs(database: Database) -> int:
    async with database.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


def checked_out(database: Database) -> int:
    return int(database.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


def only_postgres(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("holding a pooled asyncpg connection is PostgreSQL's path")


async def test_each_job_is_committed_when_its_call_returns(database: Database) -> None:
    async with Enqueuer(database) as enqueuer:
        first = await enqueuer.enqueue("test.record", {"n": 1}, queue="exports", priority=3)
        # Seen from another connection while the block is still open: committed.
        assert await count_jobs(database) == 1
        second = await enqueuer.enqueue("test.record", {"n": 2})
        assert await count_jobs(database) == 2
    async with database.read() as session:
        job = await queue.get(session, first)
        other = await queue.get(session, second)
    assert (job.queue, job.payload, job.priority, job.state) == (
        "exports",
        {"n": 1},
        3,
        JobState.READY,
    )
    assert (other.queue, other.payload) == ("default", {"n": 2})


async def test_unique_key_enqueues_once_with_a_single_enqueue_too(database: Database) -> None:
    async with Enqueuer(database) as enqueuer:
        first = await enqueuer.enqueue("test.record", unique_key="k1")
        again = await enqueuer.enqueue("test.record", unique_key="k1")
    assert first == again == await enqueue(database, "test.record", unique_key="k1")
    assert await count_jobs(database) == 1


async def test_invalid_jobs_are_refused_before_reaching_the_database(database: Database) -> None:
    async with Enqueuer(database) as enqueuer:
        with pytest.raises(InvalidInput):
            await enqueuer.enqueue("test.record", run_at=datetime(2026, 1, 1))
        with pytest.raises(InvalidInput):
            await enqueuer.enqueue("test.record", max_attempts=0)
        assert checked_out(database) == 0
    assert await count_jobs(database) == 0


async def test_one_connection_is_held_for_the_block_and_returned_after(
    database: Database, backend: str
) -> None:
    only_postgres(backend)
    async with Enqueuer(database) as enqueuer:
        assert checked_out(database) == 0  # nothing is taken before the first job
        for n in range(5):
            await enqueuer.enqueue("test.record", {"n": n})
            assert checked_out(database) == 1
    assert checked_out(database) == 0
    assert await count_jobs(database) == 5


async def test_a_held_connection_closed_by_the_server_is_replaced_unnoticed(
    database: Database, backend: str
) -> None:
    only_postgres(backend)
    async with Enqueuer(database) as enqueuer:
        await enqueuer.enqueue("test.record")
        held = await held_pid_of(enqueuer)
        await terminate_and_wait(asyncpg_dsn(database.url), held)  # the loop reads the EOF
        await enqueuer.enqueue("test.record")
        assert await held_pid_of(enqueuer) != held
    assert await count_jobs(database) == 2
    assert checked_out(database) == 0


async def test_a_held_connection_that_died_unseen_fails_once_then_is_replaced(
    database: Database, backend: str
) -> None:
    only_postgres(backend)
    async with Enqueuer(database) as enqueuer:
        await enqueuer.enqueue("test.record")
        held = await held_pid_of(enqueuer)
        terminate_behind_the_loops_back(asyncpg_dsn(database.url), held)
        with pytest.raises(DatabaseUnavailable) as raised:
            await enqueuer.enqueue("test.record")
        assert raised.value.retry_after is not None
        await enqueuer.enqueue("test.record")
        assert await held_pid_of(enqueuer) != held
    assert await count_jobs(database) == 2
    assert checked_out(database) == 0


async def held_pid_of(enqueuer: Enqueuer) -> int:
    inserter = enqueuer._inserter
    assert isinstance(inserter, HeldInserter)
    return int(await inserter._held.run(server_pid))


async def server_pid(driver: object) -> int:
    return int(driver.get_server_pid())  # type: ignore[attr-defined]


async def test_tasks_sharing_one_enqueuer_take_turns(database: Database) -> None:
    async with Enqueuer(database) as enqueuer:
        ids = await asyncio.gather(*(enqueuer.enqueue("test.record", {"n": n}) for n in range(20)))
    assert len(set(ids)) == 20
    assert await count_jobs(database) == 20

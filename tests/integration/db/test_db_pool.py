"""The main pool on asyncpg has no pre-ping: dead connections are refused or invalidated.

Two ways a pooled connection can be dead when it is checked out, both made here
with a real ``pg_terminate_backend`` (no fake drivers):

- the event loop has already read the server's EOF: the checkout's local
  ``is_closed()`` check refuses it and the pool reconnects; the caller never
  notices;
- the loop has not read it yet (the window right after a restart or a cut): the
  first statement fails, the error is a 503-shaped ``DatabaseUnavailable``
  (never a bare driver error, which the API would answer with a 500), the
  connection is invalidated, and the next checkout gets a fresh one.

The second case is made by terminating the backend from another thread while
the loop is blocked, so the EOF is waiting on the socket, unread, when the
pooled connection is checked out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from tests.support.pg_terminate import terminate_and_wait, terminate_behind_the_loops_back
from tests.support.services import PG_HOST, PG_PORT

from keel.db.engine import Database
from keel.errors import DatabaseUnavailable
from keel.guard.idempotency import ClaimResult, KeyRef, store_for
from keel.jobs import Enqueuer, enqueue
from keel.jobs.listener import asyncpg_dsn
from keel.jobs.sql import PostgresJobConnector

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    """The asyncpg pool only: SQLite has no server to lose, so the shared ``database``
    fixture is narrowed to PostgreSQL here instead of skipping its SQLite half."""
    return "postgres"


async def pooled_pid(database: Database) -> int:
    """The backend pid of the one idle connection in ``database``'s pool."""
    async with database.read() as session:
        return int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)


async def server_pid(driver: Any) -> int:
    return int(driver.get_server_pid())


async def select_one(database: Database) -> int:
    async with database.read() as session:
        return int(await session.scalar(text("SELECT 1")) or 0)


async def enqueue_one(database: Database) -> int:
    await enqueue(database, "test.record")
    return 1


async def enqueue_one_held(database: Database) -> int:
    async with Enqueuer(database) as enqueuer:
        await enqueuer.enqueue("test.record")
    return 1


async def claim_a_key(database: Database) -> int:
    """The idempotency hot path: ``Database.connection()`` and statements on its driver."""
    store = store_for(database, lease_seconds=60, retention_seconds=3600)
    ref = KeyRef("user-1", "org-1", "POST /v1/recognitions", uuid.uuid4().hex)
    claim = await store.claim(ref, owner="a", fingerprint=None, now=datetime.now(UTC))
    return int(claim.result is ClaimResult.CLAIMED)


PATHS: dict[str, Callable[[Database], Awaitable[int]]] = {
    "session": select_one,
    "enqueue": enqueue_one,
    "idempotency claim": claim_a_key,
    "Enqueuer": enqueue_one_held,
}


async def test_a_connection_the_loop_saw_closed_is_replaced_on_checkout(
    database: Database,
) -> None:
    before = await pooled_pid(database)
    # Awaited on this loop: by the time the server has no such backend, the loop
    # has read the EOF, as it does between two requests.
    await terminate_and_wait(asyncpg_dsn(database.url), before)
    after = await pooled_pid(database)
    assert after != before


@pytest.mark.parametrize("path", sorted(PATHS))
async def test_a_connection_that_died_unseen_fails_once_as_unavailable_then_is_replaced(
    database: Database, path: str
) -> None:
    use = PATHS[path]
    before = await pooled_pid(database)
    terminate_behind_the_loops_back(asyncpg_dsn(database.url), before)
    with pytest.raises(DatabaseUnavailable) as raised:
        await use(database)
    assert raised.value.retry_after is not None
    assert await use(database) == 1
    assert await pooled_pid(database) != before


def test_the_pool_has_no_pre_ping_on_asyncpg() -> None:
    """The review finding this pool answers: no BEGIN/``;``/ROLLBACK per checkout."""
    database = Database(f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/postgres")
    assert database.engine.sync_engine.pool._pre_ping is False


async def test_the_worker_claim_connection_fails_once_as_unavailable_then_is_replaced(
    database: Database,
) -> None:
    """The worker's claim goes to the driver of its own pool (``PostgresJobConnector.claim``): a
    dead connection there is a ``DatabaseUnavailable`` the claim loop retries, not a crash."""
    store = PostgresJobConnector(database, pool_size=1)
    try:
        before = await store._on_driver(server_pid)
        terminate_behind_the_loops_back(asyncpg_dsn(database.url), before)
        with pytest.raises(DatabaseUnavailable):
            await store.claim("none", 1, "w", datetime.now(UTC), datetime.now(UTC), [])
        assert await store.claim("none", 1, "w", datetime.now(UTC), datetime.now(UTC), []) == []
        assert await store._on_driver(server_pid) != before
    finally:
        await store.close()


async def test_warming_the_worker_store_opens_that_many_connections(
    database: Database,
) -> None:
    store = PostgresJobConnector(database, pool_size=4)
    try:
        await store.warm(3)
        pool = store._own.sync_engine.pool if store._own is not None else None
        assert pool is not None
        assert (pool.checkedin(), pool.checkedout()) == (3, 0)
    finally:
        await store.close()


async def test_warming_a_worker_store_that_cannot_connect_fails_without_hanging() -> None:
    nowhere = Database("postgresql+asyncpg://postgres@127.0.0.1:9/none", timeout=1.0)
    store = PostgresJobConnector(nowhere, pool_size=2)
    try:
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(store.warm(2), timeout=20)
    finally:
        await store.close()
        await nowhere.dispose()


async def test_a_held_driver_cancelled_mid_statement_is_discarded_not_reused(
    database: Database,
) -> None:
    """asyncpg may still be cancelling the statement on the server when the task is
    cancelled: the held connection is invalidated, and the next statement gets a fresh one."""
    async with database.held_autocommit_driver() as held:
        before = await held.run(server_pid)
        sleeping = asyncio.create_task(
            held.run(lambda driver: driver.fetchval("SELECT pg_sleep(5)"))
        )
        await asyncio.sleep(0.2)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        assert database.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert await held.run(server_pid) != before
    assert database.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_pooled_driver_cancelled_mid_statement_is_discarded_not_reused(
    database: Database,
) -> None:
    before = await database.on_autocommit_driver(server_pid)  # the pool's one connection
    sleeping = asyncio.create_task(
        database.on_autocommit_driver(lambda driver: driver.fetchval("SELECT pg_sleep(5)"))
    )
    await asyncio.sleep(0.2)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    assert await database.on_autocommit_driver(server_pid) != before

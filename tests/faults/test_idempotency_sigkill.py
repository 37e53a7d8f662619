"""A server SIGKILLed in the middle of a keyed request: after restart and the lease,
the retry produces exactly one recognition (PostgreSQL).

The request is held mid-flight deterministically, with no hook in product code:
the test takes an EXCLUSIVE lock on ``recognitions``, so the server's INSERT
waits on it after the key was claimed. The test watches ``pg_locks`` for that
wait, kills the process, lets the lock go, restarts, and retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.support.app import seed_world
from tests.support.databases import Templates, fresh_database
from tests.support.processes import server_env, start_server

from keel.db.engine import Database

pytestmark = [pytest.mark.fault, pytest.mark.postgres]

LEASE_SECONDS = 3
WAIT = 30.0  # bound on every wait below


@pytest.fixture
def pg_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


async def test_a_killed_request_is_retried_into_exactly_one_recognition(
    pg_url: str, tmp_path: Path
) -> None:
    database = Database(pg_url)
    dsn = pg_url.replace("postgresql+asyncpg", "postgresql")
    locker = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    settings = {
        "KEEL_IDEMPOTENCY_LEASE_SECONDS": str(LEASE_SECONDS),
        "KEEL_AUTH_CACHE_SECONDS": "0",
    }
    env = server_env(pg_url, tmp_path, settings)
    server = start_server(env, tmp_path, name="doomed")
    restarted = None
    try:
        world = await seed_world(database)
        headers = {**world.alice.headers, "Idempotency-Key": "survives-a-crash"}
        body = {"recipient_id": world.bob.id, "message": "sent once, crashed once"}
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE recognitions IN EXCLUSIVE MODE")
        async with httpx.AsyncClient(timeout=httpx.Timeout(WAIT)) as client:
            doomed = asyncio.create_task(
                client.post(f"{server.url}/v1/recognitions", json=body, headers=headers)
            )

            async def insert_is_waiting() -> bool:
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'recognitions' AND NOT l.granted"
                )
                return bool(waiting)

            await _until(insert_is_waiting, "the server's INSERT to wait on the lock")
            state = await watcher.fetchval("SELECT state FROM idempotency_keys")
            assert state == "in_flight"
            server.kill()
            with pytest.raises(httpx.HTTPError):
                await doomed
            await lock.rollback()
            # The dead request left its claim behind: nothing committed, nothing released.
            assert await watcher.fetchval("SELECT count(*) FROM recognitions") == 0
            assert await watcher.fetchval("SELECT state FROM idempotency_keys") == "in_flight"

            restarted = start_server(env, tmp_path, name="restarted")
            statuses: list[int] = []

            async def retry_runs() -> bool:
                response = await client.post(
                    f"{restarted.url}/v1/recognitions", json=body, headers=headers
                )
                statuses.append(response.status_code)
                return response.status_code != 409

            await _until(retry_runs, "the lease to run out")
            assert statuses[-1] == 201, statuses
            again = await client.post(
                f"{restarted.url}/v1/recognitions", json=body, headers=headers
            )
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
        assert await watcher.fetchval("SELECT count(*) FROM recognitions") == 1
        assert await watcher.fetchval("SELECT state FROM idempotency_keys") == "completed"
    finally:
        server.kill()
        if restarted is not None:
            restarted.stop()
        await locker.close()
        await watcher.close()
        await database.dispose()

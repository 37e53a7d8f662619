"""200 concurrent identical keyed requests across two real server processes, on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from keel.db.engine import Database
from keel.db.tables import Recognition
from tests.support.app import seed_world
from tests.support.databases import Templates, fresh_database
from tests.support.load import all_at_once
from tests.support.policies import generous_policy
from tests.support.processes import server_env, servers

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REQUESTS = 200


@pytest.fixture
def pg_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


async def test_two_hundred_identical_requests_on_two_processes_create_one_recognition(
    pg_url: str, tmp_path: Path
) -> None:
    database = Database(pg_url)
    try:
        world = await seed_world(database)
        settings = {
            "KEEL_DATABASE_POOL_SIZE": "8",
            "KEEL_DATABASE_TIMEOUT_SECONDS": "60",
            "KEEL_AUTH_CACHE_SECONDS": "30",
            # only idempotency may refuse here: no rate limits, slots or shedding in the way
            "KEEL_RATELIMIT_POLICY": str(generous_policy(tmp_path)),
            "KEEL_CONCURRENCY_PER_USER": "1000",
            "KEEL_CONCURRENCY_PER_ORG": "1000",
            "KEEL_SHED_MAX_IN_FLIGHT": "10000",
        }
        with servers(server_env(pg_url, tmp_path, settings), tmp_path, 2) as (first, second):
            headers = {**world.alice.headers, "Idempotency-Key": "one-and-only"}
            body = {"recipient_id": world.bob.id, "message": "exactly once"}
            limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=0)
            timeout = httpx.Timeout(120.0)
            async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
                responses = await all_at_once(
                    client,
                    [first.url, second.url],
                    REQUESTS,
                    "POST",
                    "/v1/recognitions",
                    json=body,
                    headers=headers,
                )
                statuses = {r.status_code for r in responses}
                assert statuses <= {201, 409}, [
                    r.text for r in responses if r.status_code not in (201, 409)
                ][:3]
                originals = [
                    r
                    for r in responses
                    if r.status_code == 201 and "idempotent-replayed" not in r.headers
                ]
                assert len(originals) == 1
                created = originals[0].json()
                replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
                assert all(
                    r.status_code == 201 and r.content == originals[0].content for r in replays
                )
                conflicts = [r for r in responses if r.status_code == 409]
                assert all(r.headers["retry-after"].isdigit() for r in conflicts)
                assert len(originals) + len(replays) + len(conflicts) == REQUESTS
                # Afterwards, every retry on either process is a replay of the same recognition.
                for server in (first, second):
                    again = await client.post(
                        f"{server.url}/v1/recognitions", json=body, headers=headers
                    )
                    assert again.headers["idempotent-replayed"] == "true"
                    assert again.json()["id"] == created["id"]
        async with database.read() as session:
            assert await session.scalar(select(func.count()).select_from(Recognition)) == 1
    finally:
        await database.dispose()

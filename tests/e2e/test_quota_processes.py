"""A quota across two real server processes sharing PostgreSQL and Redis is never overdrawn.

Twenty parallel creates by a fresh user whose daily quota is ten, split
between two ``keel serve`` processes: exactly ten are created (counted
through the API), ten are refused with 429, and ``/v1/quotas`` — on either
process — says ten used. Creates that fail after their reservation spend
nothing, and the headers count down to 0 after the tenth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.db.engine import Database
from tests.support.app import SECRET, Member, add_member, seed_world
from tests.support.databases import Templates, fresh_database
from tests.support.load import all_at_once
from tests.support.processes import keel_env, keel_server
from tests.support.services import flushed_redis

pytestmark = pytest.mark.e2e

QUOTA = 10
POLICY = f"""
version = 1
[plans]
free = 1.0
team = 1.0
enterprise = 1.0

[[limits]]
name = "api-user"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = 6000
period_seconds = 60
burst = 500

[[limits]]
name = "recognitions-daily"
key = "user"
applies_to = ["recognitions.create"]
algorithm = "quota"
limit = {QUOTA}
window = "day"
"""


@pytest.fixture
def postgres_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


@pytest.fixture
def shared_redis() -> Iterator[str]:
    with flushed_redis(11) as url:
        yield url


def people(url: str) -> tuple[Member, Member, Member]:
    """Two fresh members of one organisation and a recipient."""

    async def go() -> tuple[Member, Member, Member]:
        database = Database(url)
        try:
            world = await seed_world(database)
            first = await add_member(database, world.alice.org_id, "fresh-1@a.test")
            second = await add_member(database, world.alice.org_id, "fresh-2@a.test")
            return first, second, world.bob
        finally:
            await database.dispose()

    return asyncio.run(go())


def test_a_quota_shared_by_two_processes_is_never_overdrawn(
    postgres_url: str, shared_redis: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = keel_env(
        {
            "KEEL_DATABASE_URL": postgres_url,
            "KEEL_REDIS_URL": shared_redis,
            "KEEL_SECRET_KEY": SECRET,
            "KEEL_RATELIMIT_POLICY": str(policy),
            "KEEL_LIMITER_INSTANCES": "2",
            # a loaded CI machine must not look like a Redis outage (which decides locally)
            "KEEL_LIMITER_REDIS_TIMEOUT_SECONDS": "5",
            "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
        }
    )
    fresh, careful, bob = people(postgres_url)
    body = {"recipient_id": bob.id, "message": "thanks"}

    async def scenario(bases: list[str]) -> dict[str, object]:
        seen: dict[str, object] = {}
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await all_at_once(
                client,
                bases,
                2 * QUOTA,
                "POST",
                "/v1/recognitions",
                json=body,
                headers=fresh.headers,
            )
            seen["statuses"] = sorted(r.status_code for r in responses)
            seen["refused_by"] = {r.json()["limit"] for r in responses if r.status_code == 429}
            listed = await client.get(
                f"{bases[0]}/v1/recognitions",
                params={"giver_id": fresh.id, "limit": 100},
                headers=fresh.headers,
            )
            seen["listed"] = len(listed.json()["items"])
            seen["used"] = [await used(client, base, fresh) for base in bases]

            # A second user: failures after the reservation spend nothing, and the
            # headers count down with the test's own count of successes.
            failures = [
                await client.post(
                    f"{base}/v1/recognitions",
                    json={"recipient_id": careful.id, "message": "me"},
                    headers=careful.headers,
                )
                for base in bases * 3
            ]
            seen["failures"] = {r.status_code for r in failures}
            seen["used_after_failures"] = await used(client, bases[1], careful)
            remaining = []
            for base in bases * 6:
                response = await client.post(
                    f"{base}/v1/recognitions", json=body, headers=careful.headers
                )
                remaining.append((response.status_code, response.headers["x-ratelimit-remaining"]))
            seen["remaining"] = remaining
        return seen

    with keel_server(env, tmp_path) as one, keel_server(env, tmp_path) as two:
        seen = asyncio.run(scenario([one.url, two.url]))
    assert seen["statuses"] == [201] * QUOTA + [429] * QUOTA
    assert seen["refused_by"] == {"recognitions-daily"}
    assert seen["listed"] == QUOTA
    assert seen["used"] == [QUOTA, QUOTA]
    assert seen["failures"] == {422}
    assert seen["used_after_failures"] == 0
    expected = [(201, str(QUOTA - k)) for k in range(1, QUOTA + 1)] + [(429, "0")] * 2
    assert seen["remaining"] == expected


async def used(client: httpx.AsyncClient, base: str, member: Member) -> int:
    report = (await client.get(f"{base}/v1/quotas", headers=member.headers)).json()
    by_name = {item["name"]: item for item in report["limits"]}
    return int(by_name["recognitions-daily"]["used"])

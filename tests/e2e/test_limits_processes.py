"""Limits across real server processes: shared Redis decisions, shedding order under overload."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import SECRET, seeded_world, seeded_world_at
from tests.support.databases import Templates, fresh_database
from tests.support.load import all_at_once
from tests.support.policies import generous_policy
from tests.support.processes import free_port, keel_env, keel_server
from tests.support.services import flushed_redis

pytestmark = pytest.mark.e2e

SHARED_POLICY = """
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
limit = 5
period_seconds = 3600
burst = 5
"""


@pytest.fixture
def postgres_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


@pytest.fixture
def shared_redis() -> Iterator[str]:
    with flushed_redis(13) as url:
        yield url


def test_two_processes_sharing_redis_never_admit_more_than_the_limit_together(
    postgres_url: str, shared_redis: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(SHARED_POLICY)
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
    world = seeded_world(postgres_url)
    with keel_server(env, tmp_path) as one, keel_server(env, tmp_path) as two:
        first, second = one.url, two.url

        async def hammer() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                responses = await all_at_once(
                    client, [first, second], 30, "GET", "/v1/users/me", headers=world.alice.headers
                )
                return [r.status_code for r in responses]

        statuses = asyncio.run(hammer())
    assert statuses.count(200) == 5
    assert statuses.count(429) == 25


async def slow_body(prefix: bytes, gate: asyncio.Event, suffix: bytes) -> AsyncIterator[bytes]:
    yield prefix
    await gate.wait()
    yield suffix


def test_overload_sheds_bulk_first_then_writes_never_reads_or_probes_too_early(
    tmp_path: Path,
) -> None:
    policy = generous_policy(tmp_path)  # only shedding may refuse here
    env = keel_env(
        {
            "KEEL_RATELIMIT_POLICY": str(policy),
            "KEEL_SECRET_KEY": SECRET,
            "KEEL_SHED_MAX_IN_FLIGHT": "10",
            "KEEL_IDEMPOTENCY_REQUIRED_ROUTES": "",  # shedding alone is under test
            "KEEL_CONCURRENCY_PER_USER": "100",
            "KEEL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}",
            "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
        }
    )
    world = asyncio.run(seeded_world_at(env["KEEL_DATABASE_URL"]))
    recipient = world.bob.id
    auth = world.alice.headers
    port = free_port()

    async def scenario(base: str) -> dict[str, list[int]]:
        gate = asyncio.Event()
        seen: dict[str, list[int]] = {}
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:

            async def until_shed(method: str, path: str, **kwargs: object) -> int:
                for _ in range(100):  # bounded: 100 × 0.05 s
                    status = (
                        await client.request(method, path, headers=auth, **kwargs)
                    ).status_code  # type: ignore[arg-type]
                    if status == 503:
                        return status
                    await asyncio.sleep(0.05)
                return status

            upload_head = (
                b'--bb\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
                b"Content-Type: text/plain\r\n\r\nhello"
            )
            uploads = []
            for _ in range(5):  # one at a time, so each is admitted below the bulk threshold
                uploads.append(
                    asyncio.create_task(
                        client.post(
                            "/v1/evidence",
                            content=slow_body(upload_head, gate, b"\r\n--bb--\r\n"),
                            headers={**auth, "Content-Type": "multipart/form-data; boundary=bb"},
                        )
                    )
                )
                await asyncio.sleep(0.3)
            seen["export_at_5"] = [await until_shed("POST", "/v1/exports", json={"format": "csv"})]
            body = {"recipient_id": recipient, "message": "under load"}
            seen["write_at_5"] = [
                (await client.post("/v1/recognitions", json=body, headers=auth)).status_code
            ]
            seen["read_at_5"] = [(await client.get("/v1/recognitions", headers=auth)).status_code]
            json_head = json.dumps(body).encode()
            writes = []
            for _ in range(3):
                writes.append(
                    asyncio.create_task(
                        client.post(
                            "/v1/recognitions",
                            content=slow_body(json_head[:10], gate, json_head[10:]),
                            headers={**auth, "Content-Type": "application/json"},
                        )
                    )
                )
                await asyncio.sleep(0.3)
            seen["write_at_8"] = [await until_shed("POST", "/v1/recognitions", json=body)]
            seen["read_at_8"] = [(await client.get("/v1/recognitions", headers=auth)).status_code]
            gate.set()
            seen["held"] = [r.status_code for r in await asyncio.gather(*uploads, *writes)]
            seen["after"] = [
                (await client.post("/v1/exports", json={"format": "csv"}, headers=auth)).status_code
            ]
        return seen

    with keel_server(env, tmp_path, port=port) as server:
        seen = asyncio.run(scenario(server.url))
    assert seen["export_at_5"] == [503]
    assert seen["write_at_5"] == [201]
    assert seen["read_at_5"] == [200]
    assert seen["write_at_8"] == [503]
    assert seen["read_at_8"] == [200]
    assert seen["held"] == [201] * 8  # what was admitted finishes
    assert seen["after"] == [202]

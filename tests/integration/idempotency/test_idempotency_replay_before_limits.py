"""A replay of a finished keyed request is answered before any limit or quota (issue 14,
item 10), on SQLite and PostgreSQL, with the memory and the Redis limiter.

A user spends their daily quota with keyed creates; retrying one of them with
its original key must still get the stored response — it spends no quota unit
and no rate-limit cell — while a new key is refused 429, a different request
under a spent key is still the 422 mismatch, and another user's same key
string is another key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from tests.support.app import World, app_for, make_settings, running, seed_world
from tests.support.services import redis_url

from keel.db.tables import Recognition
from keel.testing import ManualClock

PROBLEM_TYPES = "https://keel.dev/problems/"
QUOTA = 3
RATE_BURST = 5  # creates per hour: a replay that spent a cell would soon be refused
REDIS_DB = 9

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
limit = 600
period_seconds = 60
burst = 100

[[limits]]
name = "recognitions-burst"
key = "user"
applies_to = ["recognitions.create"]
algorithm = "rate"
limit = {RATE_BURST}
period_seconds = 3600
burst = {RATE_BURST}

[[limits]]
name = "recognitions-daily"
key = "user"
applies_to = ["recognitions.create"]
algorithm = "quota"
limit = {QUOTA}
window = "day"
"""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest) -> str | None:
    return redis_url(REDIS_DB) if request.param == "redis" else None


@pytest.fixture
async def limited(
    database_url: str, tmp_path: Path, limiter: str | None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, World]]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    settings = make_settings(
        database_url,
        str(tmp_path / "blobs"),
        ratelimit_policy=policy,
        redis_url=limiter,
        idempotency_required_routes=["POST /v1/recognitions"],
    )
    app = app_for(settings, ManualClock())
    async with running(app) as client:
        yield app, client, await seed_world(app.state.services.database)


def keyed(member: object, key: str) -> dict[str, str]:
    return {**member.headers, "Idempotency-Key": key}  # type: ignore[attr-defined]


async def quota_used(client: httpx.AsyncClient, world: World) -> int:
    report = (await client.get("/v1/quotas", headers=world.alice.headers)).json()
    by_name = {item["name"]: item for item in report["limits"]}
    return int(by_name["recognitions-daily"]["used"])


async def recognitions(app: FastAPI) -> int:
    async with app.state.services.database.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Recognition)) or 0)


async def test_a_replay_after_the_quota_is_spent_gets_the_stored_response_and_spends_nothing(
    limited: tuple[FastAPI, httpx.AsyncClient, World],
) -> None:
    app, client, world = limited
    body = {"recipient_id": world.bob.id, "message": "thanks"}
    originals = []
    for index in range(QUOTA):
        response = await client.post(
            "/v1/recognitions", json=body, headers=keyed(world.alice, f"spend-{index}")
        )
        assert response.status_code == 201, response.text
        originals.append(response)
    assert await quota_used(client, world) == QUOTA
    refused = await client.post("/v1/recognitions", json=body, headers=keyed(world.alice, "new"))
    assert refused.status_code == 429
    assert refused.json()["limit"] == "recognitions-daily"

    # More replays than the rate limit has cells left: none of them spends one.
    for attempt in range(2 * RATE_BURST):
        original = originals[attempt % QUOTA]
        replay = await client.post(
            "/v1/recognitions", json=body, headers=keyed(world.alice, f"spend-{attempt % QUOTA}")
        )
        assert replay.status_code == 201, replay.text
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == original.content
        assert replay.headers["content-type"] == original.headers["content-type"]
    assert await quota_used(client, world) == QUOTA
    assert await recognitions(app) == QUOTA

    # A key that was never finished still goes through the limits: refused as before.
    again = await client.post("/v1/recognitions", json=body, headers=keyed(world.alice, "new"))
    assert again.status_code == 429
    assert again.json()["limit"] == "recognitions-daily"
    assert await recognitions(app) == QUOTA


async def test_a_different_request_under_a_spent_key_is_still_the_mismatch(
    limited: tuple[FastAPI, httpx.AsyncClient, World],
) -> None:
    app, client, world = limited
    body = {"recipient_id": world.bob.id, "message": "thanks"}
    for index in range(QUOTA):
        response = await client.post(
            "/v1/recognitions", json=body, headers=keyed(world.alice, f"spend-{index}")
        )
        assert response.status_code == 201
    other = {"recipient_id": world.bob.id, "message": "something else"}
    mismatch = await client.post(
        "/v1/recognitions", json=other, headers=keyed(world.alice, "spend-0")
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["type"] == PROBLEM_TYPES + "idempotency-key-reused"
    assert "idempotent-replayed" not in mismatch.headers
    assert await quota_used(client, world) == QUOTA
    assert await recognitions(app) == QUOTA


async def test_another_user_cannot_replay_a_key_that_is_not_theirs(
    limited: tuple[FastAPI, httpx.AsyncClient, World],
) -> None:
    app, client, world = limited
    to_bob = {"recipient_id": world.bob.id, "message": "thanks"}
    for index in range(QUOTA):
        response = await client.post(
            "/v1/recognitions", json=to_bob, headers=keyed(world.alice, f"spend-{index}")
        )
        assert response.status_code == 201
    # The same key string from bob (same organisation) is bob's own, new key: it runs
    # and spends bob's quota; from mallory (another organisation) likewise.
    to_alice = {"recipient_id": world.alice.id, "message": "thanks"}
    bobs = await client.post("/v1/recognitions", json=to_alice, headers=keyed(world.bob, "spend-0"))
    assert bobs.status_code == 201, bobs.text
    assert "idempotent-replayed" not in bobs.headers
    assert bobs.json()["giver_id"] == world.bob.id
    mallorys = await client.post(
        "/v1/recognitions", json=to_bob, headers=keyed(world.mallory, "spend-0")
    )
    assert mallorys.status_code == 422  # a recipient in another organisation: her own refusal
    assert mallorys.json()["type"] != PROBLEM_TYPES + "idempotency-key-reused"
    assert "idempotent-replayed" not in mallorys.headers
    assert await recognitions(app) == QUOTA + 1

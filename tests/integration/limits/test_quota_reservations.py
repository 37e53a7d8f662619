"""A quota is a promise: reserved at the check, kept on success, given back on failure.

Concurrent creates by one user can never pass the quota together, a create
that fails after its reservation (a 4xx from the route, an exception, a
client gone, an idempotent replay) spends nothing, and the count
``/v1/quotas`` reports is always the number of records created — checked
against the records listed through the API. In process, on the memory
backend, on both databases; tests/e2e/test_quota_processes.py does the same
across two processes sharing Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send
from tests.support.app import Member, World, add_member, app_for, make_settings, running, seed_world

from keel.domain import recognitions
from keel.domain.principal import Plan, Principal, Role
from keel.guard.limits import LimitGuard
from keel.guard.ratelimit import QuotaWindow
from keel.http.limits import LimitsMiddleware
from keel.http.state import RequestState
from keel.testing import ManualClock

QUOTA = 10


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def limited_app(
    database_url: str, tmp_path: Path, policy_file: Path, clock: ManualClock
) -> FastAPI:
    settings = make_settings(database_url, str(tmp_path / "blobs"), ratelimit_policy=policy_file)
    return app_for(settings, clock)


@pytest.fixture
async def limited(limited_app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    async with running(limited_app) as client:
        yield client, await seed_world(limited_app.state.services.database)


async def fresh_user(app: FastAPI, world: World, name: str) -> Member:
    return await add_member(app.state.services.database, world.alice.org_id, f"{name}@a.test")


async def create(
    client: httpx.AsyncClient, giver: Member, recipient: str, **headers: str
) -> httpx.Response:
    body = {"recipient_id": recipient, "message": "thanks"}
    return await client.post("/v1/recognitions", json=body, headers=giver.headers | headers)


async def created_by(client: httpx.AsyncClient, giver: Member) -> int:
    """Recognitions ``giver`` has given, counted through the API."""
    page = await client.get(
        "/v1/recognitions", params={"giver_id": giver.id, "limit": 100}, headers=giver.headers
    )
    assert page.status_code == 200
    return len(page.json()["items"])


async def used(client: httpx.AsyncClient, member: Member, name: str) -> int:
    report = (await client.get("/v1/quotas", headers=member.headers)).json()
    by_name = {item["name"]: item for item in report["limits"]}
    return int(by_name[name]["used"])


async def test_twenty_concurrent_creates_against_a_quota_of_ten_create_exactly_ten(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, world = limited
    carol = await fresh_user(limited_app, world, "carol")
    original = recognitions.create

    async def lingering(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)  # all twenty are in flight before any one succeeds
        return await original(*args, **kwargs)

    monkeypatch.setattr(recognitions, "create", lingering)
    responses = await asyncio.gather(*(create(client, carol, world.bob.id) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * QUOTA + [429] * QUOTA
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["limit"] for r in refused} == {"recognitions-daily"}
    assert await created_by(client, carol) == QUOTA
    assert await used(client, carol, "recognitions-daily") == QUOTA


async def test_creates_that_fail_after_their_reservation_spend_nothing(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    client, world = limited
    dave = await fresh_user(limited_app, world, "dave")
    failures = [
        await create(client, dave, dave.id),  # recognising oneself: refused by the route
        await create(client, dave, "usr_does_not_exist"),
        await create(client, dave, world.mallory.id),  # another organisation's member
    ] * 4
    assert all(400 <= r.status_code < 500 and r.status_code != 429 for r in failures)
    assert await used(client, dave, "recognitions-daily") == 0
    kept = [await create(client, dave, world.bob.id) for _ in range(QUOTA)]
    assert [r.status_code for r in kept] == [201] * QUOTA
    assert (await create(client, dave, world.bob.id)).status_code == 429
    assert await created_by(client, dave) == QUOTA
    assert await used(client, dave, "recognitions-daily") == QUOTA


async def test_an_exception_in_the_route_gives_the_unit_back(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, world = limited
    erin = await fresh_user(limited_app, world, "erin")

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the route failed after the quota was reserved")

    # The server answers 500; this client does not re-raise the app's exception.
    transport = httpx.ASGITransport(app=limited_app, raise_app_exceptions=False)
    with monkeypatch.context() as patch:
        patch.setattr(recognitions, "create", broken)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as other:
            failed = await create(other, erin, world.bob.id)
    assert failed.status_code == 500
    assert await used(client, erin, "recognitions-daily") == 0
    assert (await create(client, erin, world.bob.id)).status_code == 201
    assert await used(client, erin, "recognitions-daily") == 1


async def test_an_idempotent_replay_spends_nothing(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    client, world = limited
    frank = await fresh_user(limited_app, world, "frank")
    key = {"Idempotency-Key": "reservation-replay-1"}
    first = await create(client, frank, world.bob.id, **key)
    replay = await create(client, frank, world.bob.id, **key)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json()["id"] == first.json()["id"]
    assert await created_by(client, frank) == 1
    assert await used(client, frank, "recognitions-daily") == 1


async def test_after_the_kth_create_of_ten_the_headers_say_ten_minus_k_remaining(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    client, world = limited
    gina = await fresh_user(limited_app, world, "gina")
    succeeded = 0  # the test's own count, independent of the server's
    for attempt in range(QUOTA + 2):
        if attempt == 4:  # a failure in the middle: reported as the count stands
            failed = await create(client, gina, gina.id)
            assert failed.status_code == 422
            assert failed.headers["x-ratelimit-remaining"] == str(QUOTA - succeeded)
        response = await create(client, gina, world.bob.id)
        if response.status_code == 201:
            succeeded += 1
        remaining = max(0, QUOTA - succeeded)
        assert response.headers["x-ratelimit-limit"] == str(QUOTA)
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
        assert f'"recognitions-daily";r={remaining};' in response.headers["ratelimit"]
        assert '"recognitions-daily";q=10;w=86400' in response.headers["ratelimit-policy"]
    assert succeeded == QUOTA
    assert response.status_code == 429
    assert await used(client, gina, "recognitions-daily") == succeeded


async def test_a_new_users_rate_limit_usage_counts_requests_in_headers_and_quotas(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    # api-user in the small policy: 600 a minute, 50 at once, so one request's
    # cell comes back after 0.1 s; the manual clock stands still meanwhile.
    client, world = limited
    hana = await fresh_user(limited_app, world, "hana")
    sent = 0  # the test's own count of requests

    first = await client.get("/v1/users/me", headers=hana.headers)
    sent += 1
    assert first.status_code == 200
    # The bucket GCRA keeps, in the draft's terms: 50 per the 5 s a full refill takes.
    assert first.headers["ratelimit-policy"] == '"api-user";q=50;w=5'
    assert first.headers["ratelimit"] == '"api-user";r=49;t=1'
    assert (
        int(first.headers["x-ratelimit-limit"]) - int(first.headers["x-ratelimit-remaining"])
        == sent
    )

    for _ in range(6):
        response = await client.get("/v1/users/me", headers=hana.headers)
        sent += 1
        limit, remaining = (
            int(response.headers["x-ratelimit-limit"]),
            int(response.headers["x-ratelimit-remaining"]),
        )
        assert limit - remaining == sent

    report = (await client.get("/v1/quotas", headers=hana.headers)).json()
    sent += 1  # /v1/quotas is a request too, admitted before it reports
    api_user = {item["name"]: item for item in report["limits"]}["api-user"]
    assert api_user["used"] == sent
    assert api_user["remaining"] == 50 - sent
    assert (api_user["limit"], api_user["window_seconds"], api_user["burst"]) == (600, 60, 50)


async def test_a_request_cancelled_or_failing_inside_the_middleware_gives_the_unit_back(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    _client, world = limited
    guard: LimitGuard = limited_app.state.services.limits.guard
    routes = limited_app.state.services.routes
    principal = Principal(
        user_id=world.bob.id,
        org_id=world.bob.org_id,
        role=Role.MEMBER,
        token_id="tok_test",
        plan=Plan.TEAM,
    )
    gate = asyncio.Event()

    async def hangs(scope: Scope, receive: Receive, send: Send) -> None:
        gate.set()
        await asyncio.Event().wait()  # a client gone: cancelled before any response

    async def raises(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("no response")

    async def succeeds(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    def scope() -> Scope:
        return {
            "type": "http",
            "method": "POST",
            "path": "/v1/recognitions",
            "headers": [],
            "client": ("127.0.0.1", 1234),
            "state": {"keel": RequestState(principal=principal)},
        }

    async def count() -> int:
        report = await guard.limiter.backend.quota_check(
            f"recognitions-daily:user:{world.bob.id}",
            QUOTA,
            QuotaWindow("day", principal.org_timezone),
            guard.clock.now().timestamp(),
            0,
        )
        return report.used

    task = asyncio.create_task(
        LimitsMiddleware(hangs, guard=guard, routes=routes)(scope(), receive, send)
    )
    await asyncio.wait_for(gate.wait(), 5)
    assert await count() == 1  # reserved while in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count() == 0
    with pytest.raises(RuntimeError):
        await LimitsMiddleware(raises, guard=guard, routes=routes)(scope(), receive, send)
    assert await count() == 0
    await LimitsMiddleware(succeeds, guard=guard, routes=routes)(scope(), receive, send)
    assert await count() == 1

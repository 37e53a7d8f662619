"""Limits over HTTP: headers, 429s, quotas that count successes, calendar resets, warnings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from tests.support.app import World, app_for, make_settings, running, seed_world

from keel.db.tables import Evidence, Org
from keel.db.tables_audit import AuditEvent as AuditEventRow
from keel.db.tables_jobs import Job
from keel.db.tables_limits import RateLimitBreach
from keel.guard.ratelimit import QuotaCommit, RequestContext
from keel.testing import ManualClock

PROBLEM = "application/problem+json"


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


async def recognise(
    client: httpx.AsyncClient, world: World, message: str = "thanks"
) -> httpx.Response:
    body = {"recipient_id": world.bob.id, "message": message}
    return await client.post("/v1/recognitions", json=body, headers=world.alice.headers)


async def test_every_limited_response_carries_the_ietf_and_x_headers(
    limited: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = limited
    response = await client.get("/v1/recognitions", headers=world.alice.headers)
    assert response.status_code == 200
    # draft-ietf-httpapi-ratelimit-headers: structured-field lists of "name";q=;w= and "name";r=;t=
    # api-user is 600 a minute with a burst of 50: the bucket GCRA keeps holds 50
    # and refills in 5 s, and that is what the fields describe.
    assert re.fullmatch(r'"api-user";q=50;w=5', response.headers["ratelimit-policy"])
    assert re.fullmatch(r'"api-user";r=49;t=1', response.headers["ratelimit"])
    assert response.headers["x-ratelimit-limit"] == "50"
    assert response.headers["x-ratelimit-remaining"] == "49"  # the first request of a fresh user
    assert response.headers["x-ratelimit-reset"] == "1"


async def test_a_breach_is_a_429_problem_naming_the_limit_with_retry_after_and_is_recorded(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    client, _world = limited
    statuses = [(await client.get("/v1/users/me")).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    refused = await client.get("/v1/users/me")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM
    problem = refused.json()
    assert problem["limit"] == "anon-ip"
    assert problem["type"].endswith("/rate-limited")
    assert "resets in" in problem["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    recorder = limited_app.state.services.limits.guard.breaches
    assert recorder.pending == 2  # buffered, not yet written: nothing on the request path
    assert await recorder.flush() == 2
    async with limited_app.state.services.database.read() as session:
        rows = list(await session.scalars(select(RateLimitBreach)))
    assert {r.limit_name for r in rows} == {"anon-ip"}
    assert all(r.ip_hash and len(r.ip_hash) == 64 for r in rows)
    async with limited_app.state.services.database.read() as session:
        audited = await session.scalar(
            select(func.count())
            .select_from(AuditEventRow)
            .where(AuditEventRow.code == "ratelimit.breached")
        )
    assert audited == 1  # one event per caller and limit in a batch, not one per 429


async def test_failed_authentications_turn_into_429_after_the_ip_limit(
    limited: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = limited
    bad = {"Authorization": "Bearer keel_wrong"}
    statuses = [(await client.get("/v1/users/me", headers=bad)).status_code for _ in range(6)]
    assert statuses[:4] == [401, 401, 401, 401]
    assert statuses[4:] == [429, 429]
    good = await client.get("/v1/users/me", headers=world.alice.headers)
    assert good.status_code == 200  # a valid token still works: only failures are counted


async def test_quota_counts_only_successful_creates(
    limited: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = limited
    for _ in range(5):  # refused by validation: consume nothing
        bad = await client.post(
            "/v1/recognitions",
            json={"recipient_id": world.alice.id, "message": "me"},
            headers=world.alice.headers,
        )
        assert bad.status_code == 422
    created = [await recognise(client, world) for _ in range(10)]
    assert [r.status_code for r in created] == [201] * 10
    over = await recognise(client, world)
    assert over.status_code == 429
    assert over.json()["limit"] == "recognitions-daily"


async def test_daily_quota_resets_at_midnight_in_the_org_time_zone(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World], clock: ManualClock
) -> None:
    client, world = limited
    async with limited_app.state.services.database.write() as session:
        org = await session.get(Org, world.alice.org_id)
        assert org is not None
        org.timezone = "America/New_York"
    clock.set(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))  # 08:00 in New York
    for _ in range(10):
        assert (await recognise(client, world)).status_code == 201
    assert (await recognise(client, world)).status_code == 429
    clock.set(datetime(2026, 3, 11, 3, 59, tzinfo=UTC))  # 23:59 in New York: same day there
    assert (await recognise(client, world)).status_code == 429
    clock.set(datetime(2026, 3, 11, 4, 0, 30, tzinfo=UTC))  # 00:00:30 in New York: a new day
    assert (await recognise(client, world)).status_code == 201


async def test_quota_warnings_fire_once_per_threshold(
    limited_app: FastAPI,
    limited: tuple[httpx.AsyncClient, World],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, world = limited
    fired: list[tuple[str, int]] = []

    async def hook(context: RequestContext, commit: QuotaCommit) -> None:
        assert commit.crossed is not None
        fired.append((commit.name, commit.crossed))

    guard = limited_app.state.services.limits.guard
    # Hooks are given at construction (create_app gives the audit one); the test adds its own.
    monkeypatch.setattr(guard, "threshold_hooks", (*guard.threshold_hooks, hook))
    warnings = []
    for _ in range(10):
        response = await recognise(client, world)
        warnings.append(response.headers.get("keel-quota-warning"))
    assert fired == [
        ("recognitions-daily", 80),
        ("recognitions-daily", 90),
        ("recognitions-daily", 100),
    ]
    assert [w is not None for w in warnings] == [False] * 7 + [True] * 3
    assert "recognitions-daily" in (warnings[7] or "")


async def test_get_quotas_reports_usage_against_every_limit(
    limited: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = limited
    for _ in range(3):
        await recognise(client, world)
    report = (await client.get("/v1/quotas", headers=world.alice.headers)).json()
    by_name = {item["name"]: item for item in report["limits"]}
    assert by_name["recognitions-daily"]["used"] == 3
    assert by_name["recognitions-daily"]["remaining"] == 7
    assert by_name["recognitions-daily"]["scope"] == "user"
    assert "api-user" in by_name
    assert "anon-ip" not in by_name  # keyed on IP for anonymous callers only
    assert report["storage"]["used_bytes"] == 0


async def test_storage_quota_refuses_before_storing(
    database_url: str, tmp_path: Path, policy_file: Path
) -> None:
    settings = make_settings(
        database_url,
        str(tmp_path / "blobs"),
        ratelimit_policy=policy_file,
        storage_quota_bytes={"free": 1000, "team": 1000, "enterprise": 1000},
    )
    app = app_for(settings)
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        first = await client.post(
            "/v1/evidence",
            files={"file": ("a.bin", b"a" * 600, "application/octet-stream")},
            headers=world.alice.headers,
        )
        assert first.status_code == 201

        async def body() -> AsyncIterator[bytes]:  # no Content-Length: refused while streaming
            yield b'--bb\r\nContent-Disposition: form-data; name="file"; filename="b.bin"\r\n\r\n'
            for _ in range(10):
                yield b"b" * 100
            yield b"\r\n--bb--\r\n"

        second = await client.post(
            "/v1/evidence",
            content=body(),
            headers={**world.alice.headers, "Content-Type": "multipart/form-data; boundary=bb"},
        )
        assert second.status_code == 413
        assert second.json()["type"].endswith("/storage-quota-exceeded")
        stored = [
            p for p in (tmp_path / "blobs").rglob("*") if p.is_file() and "evidence" in p.parts
        ]
        assert len(stored) == 1
        async with app.state.services.database.read() as session:
            assert await session.scalar(select(func.count()).select_from(Evidence)) == 1


async def test_each_threshold_crossing_is_audited_and_notified_once(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    client, world = limited
    for _ in range(10):
        assert (await recognise(client, world)).status_code == 201
    database = limited_app.state.services.database
    async with database.read() as session:
        jobs = list(
            await session.scalars(
                select(Job.payload).where(Job.job_type == "notifications.quota_warning")
            )
        )
        crossed = await session.scalar(
            select(func.count())
            .select_from(AuditEventRow)
            .where(AuditEventRow.code == "quota.threshold_crossed")
        )
    assert len(jobs) == 3
    assert crossed == 3


async def test_a_refusal_by_a_limit_is_labelled_with_its_route_template(
    limited: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = limited
    for _ in range(11):
        last = await recognise(client, world)
    assert last.status_code == 429
    body = (await client.get("/metrics")).text
    assert ('http_response_status_code="429",http_route="/v1/recognitions",slo="true"') in body


async def test_a_request_shed_under_load_is_labelled_with_its_route_template(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World]
) -> None:
    client, world = limited
    shedder = limited_app.state.services.limits.shedder
    shedder.in_flight = shedder.thresholds.max_in_flight  # as if the process were full
    try:
        refused = await client.get("/v1/recognitions/some-id", headers=world.alice.headers)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == PROBLEM
        body = (await client.get("/metrics")).text  # probes are never shed
    finally:
        shedder.in_flight = 0
    assert (
        'http_response_status_code="503",http_route="/v1/recognitions/{recognition_id}",slo="true"'
    ) in body
    assert 'http_response_status_code="503",http_route="unmatched"' not in body


async def test_a_request_refused_for_want_of_a_slot_spends_no_rate_cell(
    limited_app: FastAPI, limited: tuple[httpx.AsyncClient, World], clock: ManualClock
) -> None:
    client, world = limited
    guard = limited_app.state.services.limits.guard
    before = await client.get("/v1/recognitions", headers=world.alice.headers)
    assert before.status_code == 200
    # Other requests of Alice's hold every one of her in-flight slots.
    key, now = f"slots:user:{world.alice.id}", clock.now().timestamp()
    held = [
        await guard.limiter.backend.slot_acquire(key, guard.concurrency.per_user, 120, now)
        for _ in range(guard.concurrency.per_user)
    ]
    refused = await client.get("/v1/recognitions", headers=world.alice.headers)
    assert refused.status_code == 429
    assert refused.json()["limit"] == "concurrency-user"
    for slot in held:
        assert slot.slot_id is not None
        await guard.limiter.backend.slot_release(key, slot.slot_id)
    after = await client.get("/v1/recognitions", headers=world.alice.headers)
    assert after.status_code == 200
    # Same instant, one admitted request later: the refusal spent nothing.
    spent = int(before.headers["x-ratelimit-remaining"]) - int(
        after.headers["x-ratelimit-remaining"]
    )
    assert spent == 1

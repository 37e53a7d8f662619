"""Idempotency keys over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send
from tests.support.app import World, app_for, make_settings, running, seed_world

from keel.api.routes import recognitions as recognition_routes
from keel.db.tables import Evidence, Export, Recognition
from keel.db.tables_idempotency import IdempotencyKey
from keel.domain import recognitions
from keel.errors import ConfigurationError, InvalidInput
from keel.guard.idempotency import KeyRef, purge_expired, store_for
from keel.guard.idempotency.sql import SqlStore
from keel.http import problems
from keel.http.recorded import recorded
from keel.http.state import RequestState, peek
from keel.settings import Settings
from keel.testing import ManualClock

PROBLEM = "application/problem+json"
TYPES = "https://keel.dev/problems/"
RECOGNITIONS = "POST /v1/recognitions"


class Quiet:
    def __getattr__(self, _name: str) -> object:
        return lambda *_args, **_kwargs: None


class StateRecorder:
    """Outermost middleware keeping each request's scope state, as the limits layer sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.states: list[RequestState | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.states.append(peek(scope))


class Harness:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, world: World, clock: ManualClock):
        self.app = app
        self.client = client
        self.world = world
        self.clock = clock

    @property
    def database(self):  # type: ignore[no-untyped-def]
        return self.app.state.services.database

    def store(self) -> SqlStore:
        settings = self.app.state.services.settings
        return store_for(
            self.database,
            lease_seconds=settings.idempotency_lease_seconds,
            retention_seconds=settings.idempotency_retention_seconds,
        )

    async def recognise(
        self, key: str | None, *, giver: object = None, body: dict[str, object] | None = None
    ) -> httpx.Response:
        giver = giver or self.world.alice
        headers = dict(giver.headers)  # type: ignore[attr-defined]
        if key is not None:
            headers["Idempotency-Key"] = key
        payload = body if body is not None else {"recipient_id": self.world.bob.id, "message": "hi"}
        return await self.client.post("/v1/recognitions", json=payload, headers=headers)

    async def count(self, table: type = Recognition) -> int:
        async with self.database.read() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def keyed_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "idempotency_required_routes": ["POST /v1/recognitions", "POST /v1/exports"],
        "idempotency_lease_seconds": 60,
    }
    values.update(overrides)
    return make_settings(database_url, str(tmp_path / "blobs"), **values)


@pytest.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    clock = ManualClock()
    app = app_for(keyed_settings(database_url, tmp_path), clock)
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        yield Harness(app, client, world, clock)


# --- keys: required, malformed ---------------------------------------------------


async def test_recognitions_and_exports_require_a_key_by_default(harness: Harness) -> None:
    assert Settings().idempotency_required_routes == ["POST /v1/recognitions", "POST /v1/exports"]
    missing = await harness.recognise(None)
    assert missing.status_code == 400
    assert missing.headers["content-type"] == PROBLEM
    problem = missing.json()
    assert problem["type"] == TYPES + "idempotency-key-required"
    assert problem["title"] == "Idempotency-Key is missing"
    assert 'rel="describedby"' in missing.headers["link"]
    export = await harness.client.post(
        "/v1/exports", json={"format": "csv"}, headers=harness.world.alice.headers
    )
    assert export.status_code == 400
    assert export.json()["type"] == TYPES + "idempotency-key-required"
    assert await harness.count() == 0
    assert await harness.count(Export) == 0


async def test_evidence_accepts_a_key_without_requiring_one(harness: Harness) -> None:
    files = {"file": ("a.txt", b"hello", "text/plain")}
    plain = await harness.client.post(
        "/v1/evidence", files=files, headers=harness.world.alice.headers
    )
    assert plain.status_code == 201


async def test_an_anonymous_request_is_a_401_not_a_missing_key(harness: Harness) -> None:
    response = await harness.client.post("/v1/recognitions", json={"message": "x"})
    assert response.status_code == 401


async def test_malformed_or_repeated_keys_are_400_problems(harness: Harness) -> None:
    auth = [(k.encode(), v.encode()) for k, v in harness.world.alice.headers.items()]
    bad_keys: list[list[bytes]] = [[b""], ["caf\u00e9".encode()], [b"x" * 256], [b"one", b"two"]]
    for values in bad_keys:
        headers = auth + [(b"idempotency-key", value) for value in values]
        response = await harness.client.post(
            "/v1/recognitions",
            json={"recipient_id": harness.world.bob.id, "message": "hi"},
            headers=headers,
        )
        assert response.status_code == 400, values
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == TYPES + "idempotency-key-invalid"
    assert await harness.count() == 0


async def test_a_255_character_key_and_its_sf_string_form_are_the_same_key(
    harness: Harness,
) -> None:
    key = "k" * 255
    first = await harness.recognise(key)
    again = await harness.recognise(f'"{key}"')
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert await harness.count() == 1


# --- replay, mismatch, scope -------------------------------------------------------


async def test_a_retry_replays_the_stored_response_and_writes_nothing(harness: Harness) -> None:
    first = await harness.recognise("key-1")
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    again = await harness.recognise("key-1")
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert await harness.count() == 1


async def test_the_fingerprint_is_canonical_json(harness: Harness) -> None:
    bob = harness.world.bob.id
    first = await harness.client.post(
        "/v1/recognitions",
        content=json.dumps({"recipient_id": bob, "message": "hi"}).encode(),
        headers={
            **harness.world.alice.headers,
            "Idempotency-Key": "k",
            "Content-Type": "application/json",
        },
    )
    reordered = await harness.client.post(
        "/v1/recognitions",
        content=f'{{ "message" : "hi",\n "recipient_id": "{bob}" }}'.encode(),
        headers={
            **harness.world.alice.headers,
            "Idempotency-Key": "k",
            "Content-Type": "application/json",
        },
    )
    assert first.status_code == reordered.status_code == 201
    assert reordered.headers["idempotent-replayed"] == "true"
    assert await harness.count() == 1


async def test_the_same_key_with_another_body_is_a_422(harness: Harness) -> None:
    await harness.recognise("key-1")
    other = await harness.recognise(
        "key-1", body={"recipient_id": harness.world.bob.id, "message": "something else"}
    )
    assert other.status_code == 422
    problem = other.json()
    assert problem["type"] == TYPES + "idempotency-key-reused"
    assert problem["title"] == "Idempotency-Key is already used"
    assert "idempotent-replayed" not in other.headers
    assert await harness.count() == 1


async def test_a_key_is_scoped_to_its_user_organisation_and_route(harness: Harness) -> None:
    world = harness.world
    mine = await harness.recognise("shared")
    bobs = await harness.recognise(
        "shared", giver=world.bob, body={"recipient_id": world.alice.id, "message": "hi"}
    )
    assert bobs.status_code == 201
    assert "idempotent-replayed" not in bobs.headers
    assert bobs.json()["id"] != mine.json()["id"]
    mallory_body = {"recipient_id": world.bob.id, "message": "hi"}
    mallorys = await harness.recognise("shared", giver=world.mallory, body=mallory_body)
    assert mallorys.status_code == 422  # her own request ran: bob is not in her organisation
    assert "idempotent-replayed" not in mallorys.headers
    export = await harness.client.post(
        "/v1/exports",
        json={"format": "csv"},
        headers={**world.alice.headers, "Idempotency-Key": "shared"},
    )
    assert export.status_code == 202
    assert "idempotent-replayed" not in export.headers
    assert await harness.count() == 2


async def test_an_export_is_requested_once_and_replayed_with_its_location(
    harness: Harness,
) -> None:
    headers = {**harness.world.alice.headers, "Idempotency-Key": "export-1"}
    first = await harness.client.post("/v1/exports", json={"format": "json"}, headers=headers)
    again = await harness.client.post("/v1/exports", json={"format": "json"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert (
        again.headers["location"]
        == first.headers["location"]
        == f"/v1/exports/{first.json()['id']}"
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await harness.count(Export) == 1


async def test_an_upload_is_stored_once_and_its_bytes_fingerprint_it(harness: Harness) -> None:
    headers = {**harness.world.alice.headers, "Idempotency-Key": "upload-1"}
    files = {"file": ("a.bin", b"\x00" * 70_000 + b"tail", "application/octet-stream")}
    first = await harness.client.post("/v1/evidence", files=files, headers=headers)
    assert first.status_code == 201
    again = await harness.client.post("/v1/evidence", files=files, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    changed = {"file": ("a.bin", b"\x00" * 70_000 + b"TAIL", "application/octet-stream")}
    other = await harness.client.post("/v1/evidence", files=changed, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"] == TYPES + "idempotency-key-reused"
    assert await harness.count(Evidence) == 1


# --- in flight, leases ---------------------------------------------------------------


async def test_a_key_in_flight_is_a_409_with_retry_after(harness: Harness) -> None:
    world = harness.world
    ref = KeyRef(world.alice.id, world.alice.org_id, RECOGNITIONS, "busy")
    claim = await harness.store().claim(
        ref, owner="other-request", fingerprint=None, now=harness.clock.now()
    )
    assert claim.owned
    response = await harness.recognise("busy")
    assert response.status_code == 409
    assert response.headers["retry-after"].isdigit()
    problem = response.json()
    assert problem["type"] == TYPES + "idempotency-key-in-flight"
    assert problem["title"] == "A request is outstanding for this Idempotency-Key"
    assert await harness.count() == 0


async def test_the_409_retry_after_is_the_rest_of_the_holders_lease(harness: Harness) -> None:
    """A well-behaved client retries when the holder's lease ends, not blindly each second."""
    world = harness.world
    ref = KeyRef(world.alice.id, world.alice.org_id, RECOGNITIONS, "busy")
    await harness.store().claim(ref, owner="other", fingerprint=None, now=harness.clock.now())
    harness.clock.advance(40.5)  # of the harness's 60 s lease
    response = await harness.recognise("busy")
    assert response.status_code == 409
    assert response.headers["retry-after"] == "20"
    harness.clock.advance(19.4)
    assert (await harness.recognise("busy")).headers["retry-after"] == "1"
    harness.clock.advance(0.2)  # the lease is over: the retry runs
    assert (await harness.recognise("busy")).status_code == 201


async def test_a_different_body_while_in_flight_is_a_422(harness: Harness) -> None:
    started = asyncio.Event()
    proceed = asyncio.Event()
    original = recognitions.create

    async def slow_create(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        started.set()
        await proceed.wait()
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    harness.app.state.patch = pytest.MonkeyPatch()
    harness.app.state.patch.setattr(recognitions, "create", slow_create)
    try:
        first = asyncio.create_task(harness.recognise("k"))
        await asyncio.wait_for(started.wait(), 10)
        same = await harness.recognise("k")
        other = await harness.recognise(
            "k", body={"recipient_id": harness.world.bob.id, "message": "no"}
        )
        proceed.set()
        done = await first
    finally:
        harness.app.state.patch.undo()
    assert same.status_code == 409
    assert other.status_code == 422
    assert done.status_code == 201
    assert await harness.count() == 1


async def test_a_dead_claim_is_taken_over_after_its_lease(harness: Harness) -> None:
    world = harness.world
    ref = KeyRef(world.alice.id, world.alice.org_id, RECOGNITIONS, "orphan")
    await harness.store().claim(
        ref, owner="crashed-process", fingerprint=None, now=harness.clock.now()
    )
    assert (await harness.recognise("orphan")).status_code == 409
    harness.clock.advance(60.5)
    response = await harness.recognise("orphan")
    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers
    assert (await harness.recognise("orphan")).headers["idempotent-replayed"] == "true"
    assert await harness.count() == 1


async def test_a_request_that_lost_its_lease_rolls_its_write_back(harness: Harness) -> None:
    """The first request hangs past its lease; a retry takes over and wins; the first's write
    is rolled back because its completion no longer owns the key."""
    started = asyncio.Event()
    proceed = asyncio.Event()
    calls = 0

    @asynccontextmanager
    async def first_one_hangs(request, session):  # type: ignore[no-untyped-def]
        # Inside the route's transaction, before its first statement (sessions connect
        # lazily), so the hang holds no lock on either database.
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await proceed.wait()
        async with recorded(request, session) as outcome:
            yield outcome

    patch = pytest.MonkeyPatch()
    patch.setattr(recognition_routes, "recorded", first_one_hangs)
    try:
        hanging = asyncio.create_task(harness.recognise("slow"))
        await asyncio.wait_for(started.wait(), 10)
        harness.clock.advance(61)
        retry = await harness.recognise("slow")
        proceed.set()
        lost = await hanging
    finally:
        proceed.set()
        patch.undo()
    assert retry.status_code == 201
    assert lost.status_code == 409
    assert lost.json()["type"] == TYPES + "idempotency-key-in-flight"
    assert await harness.count() == 1
    replay = await harness.recognise("slow")
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == retry.json()["id"]


async def test_a_slow_request_keeps_its_claim_past_the_lease_by_heartbeat(
    database_url: str, tmp_path: Path
) -> None:
    """A request running for several leases (a slow upload) is not taken for a dead one:
    its heartbeat extends the lease, a concurrent retry is a 409, one recognition is made."""
    lease = 0.3  # a beat every 0.1 s of real time; the lease it sets follows the manual clock
    clock = ManualClock()
    app = app_for(keyed_settings(database_url, tmp_path, idempotency_lease_seconds=lease), clock)
    started = asyncio.Event()
    proceed = asyncio.Event()

    @asynccontextmanager
    async def hangs(request, session):  # type: ignore[no-untyped-def]
        # Before the transaction's first statement: the hang holds no lock.
        started.set()
        await proceed.wait()
        async with recorded(request, session) as outcome:
            yield outcome

    async def locked_until() -> object:
        async with app.state.services.database.read() as session:
            return await session.scalar(
                select(IdempotencyKey.locked_until).where(IdempotencyKey.key == "slow")
            )

    async with running(app) as client:
        harness = Harness(app, client, await seed_world(app.state.services.database), clock)
        patch = pytest.MonkeyPatch()
        patch.setattr(recognition_routes, "recorded", hangs)
        try:
            slow = asyncio.create_task(harness.recognise("slow"))
            await asyncio.wait_for(started.wait(), 10)
            for _ in range(5):  # five times 0.2 s: the first lease ran out long ago
                harness.clock.advance(0.2)
                beaten = clock.now() + timedelta(seconds=lease)
                async with asyncio.timeout(10):
                    while await locked_until() != beaten:  # wait for a beat after the move
                        await asyncio.sleep(0.02)
            retry = await harness.recognise("slow")
            proceed.set()
            first = await slow
        finally:
            proceed.set()
            patch.undo()
        assert retry.status_code == 409
        assert retry.json()["type"] == TYPES + "idempotency-key-in-flight"
        assert first.status_code == 201
        assert await harness.count() == 1
        replay = await harness.recognise("slow")
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]


# --- what is stored and what is released ----------------------------------------------


async def test_a_refusal_decided_while_running_is_stored_and_replayed(harness: Harness) -> None:
    body = {"recipient_id": harness.world.mallory.id, "message": "hi"}  # another organisation
    first = await harness.recognise("refused", body=body)
    assert first.status_code == 422
    again = await harness.recognise("refused", body=body)
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


async def test_a_validation_failure_releases_the_key(harness: Harness) -> None:
    invalid = await harness.recognise("fix-me", body={"recipient_id": harness.world.bob.id})
    assert invalid.status_code == 422
    fixed = await harness.recognise("fix-me")
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers


@asynccontextmanager
async def raising_app(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, World]]:
    """A keyed app whose unhandled errors are answered (500), not raised into the test."""
    app = app_for(keyed_settings(database_url, tmp_path))
    async with app.router.lifespan_context(app):
        world = await seed_world(app.state.services.database)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
            yield app, client, world


async def test_a_rolled_back_failure_releases_the_key(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with raising_app(database_url, tmp_path) as (app, client, world):
        original = recognitions.create

        async def broken(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            await original(*args, **kwargs)  # type: ignore[arg-type]
            raise RuntimeError("boom after the insert")

        monkeypatch.setattr(recognitions, "create", broken)
        # The traceback the 500 handler logs is not what this test is about (and slow).
        monkeypatch.setattr(problems, "log", Quiet())
        headers = {**world.alice.headers, "Idempotency-Key": "retry-me"}
        body = {"recipient_id": world.bob.id, "message": "hi"}
        failed = await client.post("/v1/recognitions", json=body, headers=headers)
        assert failed.status_code == 500
        monkeypatch.setattr(recognitions, "create", original)
        retried = await client.post("/v1/recognitions", json=body, headers=headers)
        assert retried.status_code == 201
        async with app.state.services.database.read() as session:
            assert await session.scalar(select(func.count()).select_from(Recognition)) == 1


@pytest.mark.parametrize("status", [500, 422])
async def test_a_failure_after_the_completion_rolls_it_back(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    # The completion is written before the audit append (the transaction's last statement):
    # an append that fails takes the completion down with the recognition, and the key is
    # released as after any failure of the route: the retry runs, never a 409 or a replay.
    async with raising_app(database_url, tmp_path) as (app, client, world):
        audit = app.state.services.audit

        async def broken(*_args: object, **_kwargs: object) -> None:
            if status == 422:
                raise InvalidInput("refused in the audit append")
            raise RuntimeError("boom in the audit append")

        monkeypatch.setattr(audit, "record", broken)
        monkeypatch.setattr(problems, "log", Quiet())
        headers = {**world.alice.headers, "Idempotency-Key": "audit-fails"}
        body = {"recipient_id": world.bob.id, "message": "hi"}
        failed = await client.post("/v1/recognitions", json=body, headers=headers)
        assert failed.status_code == status
        monkeypatch.undo()
        retried = await client.post("/v1/recognitions", json=body, headers=headers)
        async with app.state.services.database.read() as session:
            count = await session.scalar(select(func.count()).select_from(Recognition))
            stored = await session.scalar(select(IdempotencyKey.response_body))
        assert retried.status_code == 201, retried.text
        assert "idempotent-replayed" not in retried.headers
        assert count == 1
        assert json.loads(stored or b"{}")["id"] == retried.json()["id"]


# --- concurrency, retention, metrics, state --------------------------------------------


async def test_concurrent_identical_requests_execute_once(harness: Harness) -> None:
    responses = await asyncio.gather(*(harness.recognise("same") for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    originals = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(originals) == 1
    ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert ids == {originals[0].json()["id"]}
    assert await harness.count() == 1


async def test_keys_expire_after_the_retention_period(harness: Harness) -> None:
    first = await harness.recognise("old")
    harness.clock.advance(24 * 3600 + 1)
    again = await harness.recognise("old")
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    harness.clock.advance(24 * 3600 + 1)
    assert await purge_expired(harness.database, harness.clock.now()) == 1
    assert await harness.count(IdempotencyKey) == 0


def _sample(harness: Harness, name: str, operation: str) -> float:
    method, _, route = operation.partition(" ")
    registry = harness.app.state.services.metrics.registry
    return registry.get_sample_value(name, {"method": method, "route": route}) or 0.0


async def test_replays_conflicts_and_mismatches_are_counted_by_route(harness: Harness) -> None:
    names = ("replays", "conflicts", "mismatches")
    before = {n: _sample(harness, f"keel_idempotency_{n}_total", RECOGNITIONS) for n in names}
    await harness.recognise("m")
    await harness.recognise("m")
    await harness.recognise("m", body={"recipient_id": harness.world.bob.id, "message": "other"})
    world = harness.world
    ref = KeyRef(world.alice.id, world.alice.org_id, RECOGNITIONS, "m-busy")
    await harness.store().claim(ref, owner="x", fingerprint=None, now=harness.clock.now())
    await harness.recognise("m-busy")
    after = {n: _sample(harness, f"keel_idempotency_{n}_total", RECOGNITIONS) for n in names}
    assert {n: after[n] - before[n] for n in names} == {
        "replays": 1,
        "conflicts": 1,
        "mismatches": 1,
    }


async def test_a_replay_is_flagged_in_the_request_state(database_url: str, tmp_path: Path) -> None:
    app = app_for(keyed_settings(database_url, tmp_path))
    recorder: list[StateRecorder] = []

    def recording(inner: ASGIApp) -> StateRecorder:
        recorder.append(StateRecorder(inner))
        return recorder[0]

    app.add_middleware(recording)  # type: ignore[arg-type]
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        headers = {**world.alice.headers, "Idempotency-Key": "flag"}
        body = {"recipient_id": world.bob.id, "message": "hi"}
        await client.post("/v1/recognitions", json=body, headers=headers)
        await client.post("/v1/recognitions", json=body, headers=headers)
    states = recorder[0].states
    first, second = states
    assert first is not None
    assert not first.replayed
    assert second is not None
    assert second.replayed


async def test_idempotency_can_be_switched_off(database_url: str, tmp_path: Path) -> None:
    app = app_for(keyed_settings(database_url, tmp_path, idempotency_enabled=False))
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        headers = {**world.alice.headers, "Idempotency-Key": "ignored"}
        body = {"recipient_id": world.bob.id, "message": "hi"}
        first = await client.post("/v1/recognitions", json=body, headers=headers)
        second = await client.post("/v1/recognitions", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


async def test_an_upload_refused_before_its_work_releases_the_key(harness: Harness) -> None:
    headers = {**harness.world.alice.headers, "Idempotency-Key": "upload-fix"}
    refused = {"file": ("a.exe", b"MZ", "application/x-msdownload")}
    first = await harness.client.post("/v1/evidence", files=refused, headers=headers)
    assert first.status_code == 415
    fixed = {"file": ("a.txt", b"fine", "text/plain")}
    second = await harness.client.post("/v1/evidence", files=fixed, headers=headers)
    assert second.status_code == 201
    assert "idempotent-replayed" not in second.headers


def test_requiring_keys_on_an_operation_that_takes_none_is_refused_at_startup(
    database_url: str, tmp_path: Path
) -> None:
    settings = keyed_settings(
        database_url, tmp_path, idempotency_required_routes=["DELETE /v1/recognitions"]
    )
    with pytest.raises(ConfigurationError):
        app_for(settings)
    from_env = Settings.model_validate(
        {"idempotency_required_routes": " POST  /v1/recognitions , POST /v1/exports,"}
    )
    assert from_env.idempotency_required_routes == ["POST /v1/recognitions", "POST /v1/exports"]


async def test_the_openapi_document_names_the_header_on_creating_operations(
    harness: Harness,
) -> None:
    paths = harness.app.openapi()["paths"]
    for path in ("/v1/recognitions", "/v1/evidence", "/v1/exports"):
        names = [p["name"] for p in paths[path]["post"].get("parameters", [])]
        assert "Idempotency-Key" in names

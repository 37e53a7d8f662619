"""A keyed request whose server dies mid-flight is retried to completion within 5 s of
the crash, and a live request slower than its lease keeps its key (issue 14, item 9).

Real ``keel serve`` processes on SQLite and PostgreSQL, with Keel's *default*
lease (nothing here shortens it). The request is held in flight the way a real
one is: an evidence upload whose body the client streams slowly — a keyed
upload is claimed before its body is read, so the claim exists, and is
heartbeated, while the bytes trickle in.

- **Crash**: two servers share the database; the one receiving the upload is
  SIGKILLed; the client retries on the other at once and then as each 409's
  ``Retry-After`` says. The retry is created (201) within 5 s of the kill, and
  the database holds exactly one evidence row for the key.
- **Slow but alive**: an upload that takes several leases keeps its claim (its
  heartbeat renews it); retries meanwhile, on the same server and on another,
  get 409 with a ``Retry-After`` no longer than the lease, never a second run;
  once the upload finishes, a retry replays its outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from tests.support.app import World, seeded_world
from tests.support.databases import BACKENDS, Templates, fresh_database
from tests.support.policies import generous_policy
from tests.support.processes import KeelServer, server_env, start_server

from keel.db.engine import Database
from keel.db.tables import Evidence
from keel.db.tables_idempotency import IdempotencyKey
from keel.settings import Settings

pytestmark = [pytest.mark.fault, pytest.mark.e2e]

BOUNDARY = "keel-fault-boundary"
TARGET_SECONDS = 5.0  # the target: a retry completes within 5 s of a crash
WAIT = 30.0  # bound on every wait that is not the target
LEASE = Settings().idempotency_lease_seconds  # the default, which this test holds to the target
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


class Upload:
    """One keyed evidence upload: its key, its file, its body cut in two halves."""

    def __init__(self, key: str, world: World) -> None:
        self.key = key
        self.world = world
        self.payload = b"\x89PNG\r\n\x1a\n" + os.urandom(48 * 1024)
        half = len(self.payload) // 2
        head = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="proof.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.first, self.rest = head + self.payload[:half], self.payload[half:] + tail
        self.finish = asyncio.Event()

    @property
    def headers(self) -> dict[str, str]:
        return {**self.world.alice.headers, **HEADERS, "Idempotency-Key": self.key}

    async def slowly(self) -> AsyncIterator[bytes]:
        """The first half of the body now, the rest once ``finish`` is set."""
        yield self.first
        await self.finish.wait()
        yield self.rest

    def start_slowly(self, client: httpx.AsyncClient, server: KeelServer) -> asyncio.Task[Any]:
        """The upload sent slowly (see ``slowly``), as a task."""
        return asyncio.create_task(
            client.post(f"{server.url}/v1/evidence", content=self.slowly(), headers=self.headers)
        )

    async def post(self, client: httpx.AsyncClient, server: KeelServer) -> httpx.Response:
        """The whole upload at once, as a retry sends it."""
        return await client.post(
            f"{server.url}/v1/evidence", content=self.first + self.rest, headers=self.headers
        )

    async def state(self, database: Database) -> str | None:
        async with database.read() as session:
            return await session.scalar(
                select(IdempotencyKey.state).where(IdempotencyKey.key == self.key)
            )

    async def rows(self, database: Database) -> int:
        digest = hashlib.sha256(self.payload).hexdigest()
        async with database.read() as session:
            found = await session.scalar(
                select(func.count()).select_from(Evidence).where(Evidence.sha256 == digest)
            )
            return int(found or 0)

    async def until_in_flight(self, database: Database) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if await self.state(database) == "in_flight":
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the upload's key was never claimed")


class Fleet:
    """Servers on one database, started when first asked for and again after a kill."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.running: dict[str, KeelServer] = {}

    def server(self, name: str) -> KeelServer:
        found = self.running.get(name)
        if found is None or found.process.poll() is not None:
            found = self.running[name] = start_server(self.env, self.workdir, name=name)
        return found

    def stop(self) -> None:
        for server in self.running.values():
            server.kill()  # nothing to drain: every test waits for its own requests


@dataclass
class Shared:
    database_url: str
    fleet: Fleet
    world: World


@pytest.fixture(scope="module", params=BACKENDS)
def shared(
    request: pytest.FixtureRequest, templates: Templates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    """One database and its servers per backend, for both tests (starting servers is
    most of this module's time)."""
    workdir = tmp_path_factory.mktemp(f"crash-{request.param}")
    with fresh_database(templates, str(request.param), workdir) as url:
        world = seeded_world(url)
        env = server_env(
            url,
            workdir,
            {
                "KEEL_AUTH_CACHE_SECONDS": "30",
                "KEEL_RATELIMIT_POLICY": str(generous_policy(workdir)),
            },
        )
        fleet = Fleet(env, workdir)
        try:
            yield Shared(url, fleet, world)
        finally:
            fleet.stop()


@pytest.fixture
async def database(shared: Shared) -> AsyncIterator[Database]:
    found = Database(shared.database_url)
    yield found
    await found.dispose()


async def retry_until_done(
    client: httpx.AsyncClient, server: KeelServer, upload: Upload, deadline: float
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Retry the whole upload as a well-behaved client: at once, then after each 409's
    ``Retry-After``; every answer before the last is returned too."""
    refused: list[httpx.Response] = []
    for _ in range(20):
        response = await upload.post(client, server)
        if response.status_code != 409:
            return response, refused
        refused.append(response)
        wait = float(response.headers["retry-after"])
        if time.monotonic() + wait > deadline:
            break
        await asyncio.sleep(wait)
    raise AssertionError(f"still refused: {[r.headers.get('retry-after') for r in refused]}")


def assert_in_flight_refusals(refused: list[httpx.Response]) -> None:
    for response in refused:
        assert response.json()["type"].endswith("/idempotency-key-in-flight")
        assert 1 <= int(response.headers["retry-after"]) <= LEASE


async def test_a_live_request_slower_than_its_lease_keeps_its_key(
    shared: Shared, database: Database
) -> None:
    owner, other = shared.fleet.server("a"), shared.fleet.server("b")
    upload = Upload("slow-but-alive", shared.world)
    async with httpx.AsyncClient(timeout=httpx.Timeout(WAIT)) as client:
        slow = upload.start_slowly(client, owner)
        try:
            await upload.until_in_flight(database)
            started = time.monotonic()
            refused: list[httpx.Response] = []
            # Retries on both servers for more than two leases: the claim never lapses.
            while time.monotonic() - started < 2.5 * LEASE:
                for server in (owner, other):
                    response = await upload.post(client, server)
                    assert response.status_code == 409, response.text
                    refused.append(response)
                await asyncio.sleep(LEASE / 4)
            assert not slow.done()
            assert await upload.rows(database) == 0
        finally:
            upload.finish.set()
        first = await slow
        assert first.status_code == 201, first.text
        assert_in_flight_refusals(refused)
        replay = await upload.post(client, other)
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]
    assert await upload.rows(database) == 1
    assert await upload.state(database) == "completed"


async def test_a_retry_after_a_crash_completes_within_five_seconds_and_runs_once(
    shared: Shared, database: Database
) -> None:
    doomed, survivor = shared.fleet.server("a"), shared.fleet.server("b")
    upload = Upload("survives-a-crash", shared.world)
    async with httpx.AsyncClient(timeout=httpx.Timeout(WAIT)) as client:
        in_flight = upload.start_slowly(client, doomed)
        try:
            await upload.until_in_flight(database)
            await asyncio.sleep(LEASE / 2)  # mid-request, a heartbeat or so after the claim
            doomed.kill()
            killed = time.monotonic()
            upload.finish.set()  # the rest of the body meets a dead socket
            with pytest.raises(httpx.HTTPError):
                await in_flight
        finally:
            upload.finish.set()
            in_flight.cancel()
        assert await upload.state(database) == "in_flight"  # the dead request's claim remains
        assert await upload.rows(database) == 0

        done, refused = await retry_until_done(
            client, survivor, upload, deadline=killed + TARGET_SECONDS
        )
        elapsed = time.monotonic() - killed
        assert done.status_code == 201, done.text
        assert "idempotent-replayed" not in done.headers
        assert elapsed < TARGET_SECONDS, (elapsed, [r.headers["retry-after"] for r in refused])
        assert_in_flight_refusals(refused)

        again = await upload.post(client, survivor)
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == done.json()["id"]
    assert await upload.rows(database) == 1
    assert await upload.state(database) == "completed"

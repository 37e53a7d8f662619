"""File storage failing for real: its directory replaced by a file, or removed.

The last test does it to a real ``keel serve`` on the real clock, with the default breaker
settings, and measures what issue 14 found too slow: ``/ready`` stays 200 (``warn``) while
storage fails, and uploads succeed again within 5 s of storage coming back.

(Tests run as root, and ``chmod`` does not stop root: the directory is made unusable by
putting a file where it was, or by removing it.) Uploads and downloads answer 503 with
``Retry-After``; recognitions and evidence metadata, which need no storage, keep working;
the ``storage`` breaker opens, fails fast while open, and closes again once storage is
back and the wait is over — all on the app's manual clock, nothing sleeps for it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from tests.support.app import World, make_settings, seeded_world_at
from tests.support.policies import generous_policy
from tests.support.processes import keel_server, server_env

from keel.db.tables_audit import AuditEvent as AuditEventRow
from keel.resilience import BreakerState, BreakerTransition
from keel.settings import Settings
from keel.testing import ManualClock

PROBLEM = "application/problem+json"
WAIT = 10.0


@pytest.fixture
def backend() -> str:
    return "sqlite"  # storage faults do not depend on the database


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        str(tmp_path / "blobs"),
        breaker_window_size=4,
        breaker_minimum_calls=2,
        breaker_wait_seconds=WAIT,
        breaker_half_open_calls=1,
        storage_retry_attempts=2,
        health_cache_seconds=0,
    )


def replace_with_file(blobs: Path, parked: Path) -> None:
    blobs.rename(parked)
    blobs.write_bytes(b"a file where the directory was")


def remove(blobs: Path, parked: Path) -> None:
    blobs.rename(parked)  # as good as removed, and restorable


def restore(blobs: Path, parked: Path) -> None:
    if blobs.is_file():
        blobs.unlink()
    elif blobs.exists():
        shutil.rmtree(blobs)
    parked.rename(blobs)


def assert_unavailable(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) >= 1
    problem: dict[str, object] = response.json()
    assert problem["type"] == "https://keel.dev/problems/storage-unavailable"
    return problem


@pytest.mark.parametrize("break_storage", [replace_with_file, remove], ids=["file", "removed"])
async def test_storage_outage_is_503_elsewhere_unaffected_and_the_breaker_recovers(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: World,
    clock: ManualClock,
    tmp_path: Path,
    break_storage: Callable[[Path, Path], None],
) -> None:
    headers = world.alice.headers
    files = {"file": ("a.txt", b"kept safe", "text/plain")}
    created = await client.post("/v1/evidence", files=files, headers=headers)
    assert created.status_code == 201, created.text
    evidence_id = created.json()["id"]
    breaker = app.state.services.dependencies.storage.breaker
    heard: list[BreakerTransition] = []
    app.state.services.dependencies.registry.add_listener(heard.append)  # the audit log's hook
    blobs, parked = tmp_path / "blobs", tmp_path / "blobs-parked"

    break_storage(blobs, parked)
    other = {"file": ("b.txt", b"new bytes", "text/plain")}
    assert_unavailable(await client.post("/v1/evidence", files=other, headers=headers))
    assert_unavailable(await client.get(f"/v1/evidence/{evidence_id}/content", headers=headers))
    assert breaker.state is BreakerState.OPEN

    # Open: nobody touches the disk; the answer says so and when to come back.
    rejected = assert_unavailable(await client.post("/v1/evidence", files=other, headers=headers))
    assert rejected["reason"] == "breaker-open"

    # Readiness says which part is degraded but keeps the instance in rotation (storage
    # is shared: failing /ready here would drain every instance at once); liveness is
    # unaffected.
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.headers["content-type"] == "application/health+json"
    assert ready.json()["status"] == "warn", ready.text
    statuses = {name: found[0]["status"] for name, found in ready.json()["checks"].items()}
    assert statuses["storage:responseTime"] == "warn", ready.text
    assert statuses["database:responseTime"] == "pass", ready.text
    assert (await client.get("/live")).status_code == 200

    # Everything that needs no storage keeps working meanwhile.
    body = {"recipient_id": world.bob.id, "message": "storage is down, thanks anyway"}
    recognised = await client.post("/v1/recognitions", json=body, headers=headers)
    assert recognised.status_code == 201, recognised.text
    assert (await client.get("/v1/recognitions", headers=headers)).status_code == 200
    metadata = await client.get(f"/v1/evidence/{evidence_id}", headers=headers)
    assert metadata.status_code == 200

    # Storage comes back; the breaker still fails fast until its wait is over...
    restore(blobs, parked)
    assert_unavailable(await client.get(f"/v1/evidence/{evidence_id}/content", headers=headers))
    clock.advance(WAIT)
    # ...then one probe succeeds and closes it.
    download = await client.get(f"/v1/evidence/{evidence_id}/content", headers=headers)
    assert download.status_code == 200, download.text
    assert download.content == b"kept safe"
    assert breaker.state is BreakerState.CLOSED
    assert [(e.breaker, e.to_state) for e in heard] == [
        ("storage", BreakerState.OPEN),
        ("storage", BreakerState.HALF_OPEN),
        ("storage", BreakerState.CLOSED),
    ]
    again = await client.post("/v1/evidence", files=other, headers=headers)
    assert again.status_code == 201, again.text

    # The same transitions reached the audit log (system chain).
    services = app.state.services
    async with services.database.read() as session:
        audited = (
            await session.execute(
                select(AuditEventRow.fields).where(AuditEventRow.code == "breaker.state_changed")
            )
        ).all()
    assert len(audited) == 3, audited


RECOVERY_BOUND = 5.0  # issue 14: a recovered dependency is noticed within a few seconds
HEALTH = "application/health+json"


@pytest.mark.fault
@pytest.mark.e2e
async def test_storage_failing_keeps_the_instance_ready_and_uploads_return_within_seconds(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}"
    env = server_env(
        url,
        tmp_path,
        {
            "KEEL_RATELIMIT_POLICY": str(generous_policy(tmp_path)),
            "KEEL_HEALTH_CACHE_SECONDS": "0",
            "KEEL_INPROCESS_WORKER": "off",
        },
    )
    world = await seeded_world_at(url)
    headers = world.alice.headers
    blobs, parked = tmp_path / "blobs", tmp_path / "blobs-parked"

    def upload(number: int) -> dict[str, tuple[str, bytes, str]]:
        return {"file": (f"f{number}.txt", f"bytes {number}".encode(), "text/plain")}

    with keel_server(env, tmp_path, ready_path="/ready") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            first = await http.post("/v1/evidence", files=upload(0), headers=headers)
            assert first.status_code == 201, first.text
            evidence_id = first.json()["id"]

            replace_with_file(blobs, parked)
            # Long enough for the breaker to open and its wait to grow to the cap: the
            # recovery below is measured from the worst case, not from a fresh trip.
            outage_ends = time.monotonic() + 8.0
            for number in range(1, 200):  # bounded in count and time
                if time.monotonic() >= outage_ends:
                    break
                failed = await http.post("/v1/evidence", files=upload(number), headers=headers)
                assert_unavailable(failed)
                await asyncio.sleep(0.1)
            assert_unavailable(
                await http.get(f"/v1/evidence/{evidence_id}/content", headers=headers)
            )
            # Still in rotation: only what the instance cannot serve at all fails /ready.
            ready = await http.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.headers["content-type"] == HEALTH
            assert ready.json()["status"] == "warn", ready.text
            assert ready.json()["checks"]["storage:responseTime"][0]["status"] == "warn"
            body = {"recipient_id": world.bob.id, "message": "storage is down, thanks anyway"}
            recognised = await http.post("/v1/recognitions", json=body, headers=headers)
            assert recognised.status_code == 201, recognised.text

            restore(blobs, parked)
            restored = time.monotonic()
            uploaded = None
            for number in range(200, 400):  # bounded in count and time
                uploaded = await http.post("/v1/evidence", files=upload(number), headers=headers)
                if uploaded.status_code == 201 or time.monotonic() - restored > 20:
                    break
                assert_unavailable(uploaded)
                await asyncio.sleep(0.1)
            took = time.monotonic() - restored
            assert uploaded is not None
            assert uploaded.status_code == 201, uploaded.text
            assert took <= RECOVERY_BOUND, f"uploads came back {took:.1f} s after storage did"

            download = await http.get(f"/v1/evidence/{evidence_id}/content", headers=headers)
            assert download.status_code == 200, download.text
            assert download.content == b"bytes 0"
            for _ in range(50):  # the breaker closes after its probes; bounded
                ready = await http.get("/ready")
                if ready.json()["status"] == "pass":
                    break
                await asyncio.sleep(0.1)
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "pass", ready.text

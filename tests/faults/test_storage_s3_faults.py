"""Object storage stopped for real: the SeaweedFS process stopped in the middle of a
multipart upload, then started again on the same data.

The upload answers 503 with ``Retry-After``; nothing is half-written (no evidence row,
no object under a content key; the unfinished multipart upload is invisible and
``collect_abandoned`` removes it); recognitions keep working; once SeaweedFS is back
and the breaker's wait is over, downloads and uploads work again.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from tests.support.app import World, make_settings
from tests.support.seaweedfs import SeaweedFS, leftovers, object_keys, seaweedfs_server

from keel.db.tables import Evidence
from keel.settings import Settings
from keel.testing import ManualClock

PROBLEM = "application/problem+json"
PREFIX = "fault"
PART = 5 * 1024 * 1024
MIB = 1024 * 1024
WAIT = 10.0
BOUNDARY = "keel-fault-boundary"

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this module's own: these tests stop it."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs-faults")) as server:
        yield server


@pytest.fixture
def backend() -> str:
    return "sqlite"  # storage faults do not depend on the database


@pytest.fixture
def settings(database_url: str, tmp_path: Path, weed: SeaweedFS) -> Settings:
    return make_settings(
        database_url,
        str(tmp_path / "blobs"),
        **weed.settings(PREFIX),
        storage_s3_part_size_bytes=PART,
        storage_timeout_seconds=5.0,
        breaker_window_size=4,
        breaker_minimum_calls=2,
        breaker_wait_seconds=WAIT,
        breaker_half_open_calls=1,
        storage_retry_attempts=2,
        health_cache_seconds=0,
    )


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"] == "https://keel.dev/problems/storage-unavailable"


def multipart_head() -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def multipart_tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


async def evidence_rows(app: FastAPI) -> int:
    async with app.state.services.database.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Evidence)) or 0)


async def test_seaweedfs_stopped_mid_upload_is_503_leaves_nothing_and_recovers(
    app: FastAPI, client: httpx.AsyncClient, world: World, clock: ManualClock, weed: SeaweedFS
) -> None:
    headers = world.alice.headers
    kept = secrets.token_bytes(1000)
    files = {"file": ("kept.bin", kept, "application/octet-stream")}
    created = await client.post("/v1/evidence", files=files, headers=headers)
    assert created.status_code == 201, created.text
    kept_path = f"/v1/evidence/{created.json()['id']}/content"
    stored_before = await object_keys(weed, PREFIX)
    big = secrets.token_bytes(8 * MIB)

    async def stopping_midway() -> AsyncIterator[bytes]:
        yield multipart_head()
        for start in range(0, len(big), MIB):
            if start == 6 * MIB:
                # The first part is on the server: this is the middle of a multipart upload.
                assert any(item.startswith("upload:") for item in await leftovers(weed, PREFIX))
                weed.stop()
            yield big[start : start + MIB]
        yield multipart_tail()

    form = {**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert_unavailable(await client.post("/v1/evidence", content=stopping_midway(), headers=form))
    assert_unavailable(await client.get(kept_path, headers=headers))
    assert await evidence_rows(app) == 1  # no row for the broken upload

    # Everything that needs no storage keeps working meanwhile.
    body = {"recipient_id": world.bob.id, "message": "object storage is down, thanks anyway"}
    recognised = await client.post("/v1/recognitions", json=body, headers=headers)
    assert recognised.status_code == 201, recognised.text

    await weed.restart()
    # Nothing half-written is visible: the only object is the blob committed before.
    assert await object_keys(weed, PREFIX) == stored_before

    clock.advance(WAIT)  # the breaker's wait is over: its probe finds storage back
    download = await client.get(kept_path, headers=headers)
    assert download.status_code == 200, download.text
    assert download.content == kept
    # What the outage kept the upload's own abort from removing, maintenance collects.
    store = app.state.services.store
    await store.collect_abandoned(datetime.now(UTC) + timedelta(minutes=1))
    assert await leftovers(weed, PREFIX) == []

    files = {"file": ("big.bin", big, "application/octet-stream")}
    again = await client.post("/v1/evidence", files=files, headers=headers)
    assert again.status_code == 201, again.text
    fetched = await client.get(f"/v1/evidence/{again.json()['id']}/content", headers=headers)
    assert fetched.content == big
    assert await leftovers(weed, PREFIX) == []

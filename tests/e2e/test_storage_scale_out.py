"""Two ``keel serve`` processes and a ``keel worker`` on one PostgreSQL, one Redis (the
replicas' shared limits and breaker state) and one SeaweedFS:
a file uploaded through one server downloads byte-exact through the other, whole and by
range; an export the worker writes downloads, the same, from either server. Then the
worker stops and SeaweedFS is stopped too — nothing runs that could tidy up after the
outage: uploads (one part or several) and downloads answer 503 with ``Retry-After`` on
both servers, recognitions keep working, no evidence row is written for a refused
upload, and once SeaweedFS is back uploads succeed again within seconds (real clock,
default breaker settings) and every evidence row's bytes are in the bucket.

Each process has a storage directory of its own, so only the shared object storage
can make the bytes appear on the other side.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from keel.db.engine import Database
from keel.db.tables import Evidence
from tests.support.app import SECRET, seeded_world
from tests.support.databases import Templates, fresh_database
from tests.support.processes import KEEL, keel_env, start_server
from tests.support.seaweedfs import SeaweedFS, object_keys, seaweedfs_server
from tests.support.services import flushed_redis

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.fault]

SIZE = 6 * 1024 * 1024 + 17  # past one 5 MiB part: a multipart upload


@pytest.fixture
def postgres_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this module's own: the test stops it."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs-scale-out")) as server:
        yield server


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1


@pytest.fixture
def shared_redis() -> Iterator[str]:
    with flushed_redis(14) as url:
        yield url


def worker(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """A standalone ``keel worker`` (no probe port: the test reads the exports it writes)."""
    with (cwd / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [*KEEL, "worker"],
            env={**env, "KEEL_WORKER_HTTP_PORT": "0"},
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def evidence_keys(url: str) -> list[str]:
    """The storage key of every evidence row, read behind the servers' backs."""
    database = Database(url)
    try:
        async with database.read() as session:
            return list(await session.scalars(select(Evidence.storage_key)))
    finally:
        await database.dispose()


def finished_export(http: httpx.Client, base: str, headers: dict[str, str], path: str) -> None:
    for _ in range(300):  # bounded: 300 × 0.1 s
        status = http.get(f"{base}{path}", headers=headers).json()["status"]
        if status in ("succeeded", "failed"):
            assert status == "succeeded"
            return
        time.sleep(0.1)
    raise AssertionError("the worker did not finish the export")


def test_an_upload_through_one_process_downloads_byte_exact_through_another(
    postgres_url: str, shared_redis: str, weed: SeaweedFS, tmp_path: Path
) -> None:
    world = seeded_world(postgres_url)
    prefix = f"scale-out-{secrets.token_hex(6)}"
    storage = {
        **weed.environment(prefix),
        "KEEL_STORAGE_S3_PART_SIZE_BYTES": str(5 * 1024 * 1024),
    }
    started = []
    jobs: subprocess.Popen[bytes] | None = None
    try:
        for index in range(2):
            workdir = tmp_path / f"replica-{index}"
            workdir.mkdir()
            env = keel_env(
                {
                    "KEEL_DATABASE_URL": postgres_url,
                    "KEEL_REDIS_URL": shared_redis,
                    "KEEL_SECRET_KEY": SECRET,
                    "KEEL_STORAGE_DIR": str(workdir / "blobs"),
                    **storage,
                }
            )
            started.append(start_server(env, workdir, name=f"replica-{index}"))
        first, second = started
        data = secrets.token_bytes(SIZE)
        headers = world.alice.headers
        with httpx.Client(timeout=60) as http:
            files = {"file": ("big.bin", data, "application/octet-stream")}
            created = http.post(f"{first.url}/v1/evidence", files=files, headers=headers)
            assert created.status_code == 201, created.text
            assert created.json()["sha256"] == hashlib.sha256(data).hexdigest()
            path = f"/v1/evidence/{created.json()['id']}/content"
            whole = http.get(f"{second.url}{path}", headers=headers)
            assert whole.status_code == 200, whole.text
            assert whole.content == data
            window = {**headers, "Range": "bytes=5242870-5242889"}  # across the part boundary
            ranged = http.get(f"{second.url}{path}", headers=window)
            assert ranged.status_code == 206, ranged.text
            assert ranged.content == data[5242870:5242890]

            thanks = {"recipient_id": world.bob.id, "message": "exported through S3"}
            recognised = http.post(f"{first.url}/v1/recognitions", json=thanks, headers=headers)
            assert recognised.status_code == 201, recognised.text
            jobs = worker(env, tmp_path)
            export = http.post(f"{second.url}/v1/exports", json={"format": "csv"}, headers=headers)
            assert export.status_code == 202, export.text
            export_path = f"/v1/exports/{export.json()['id']}"
            finished_export(http, first.url, headers, export_path)
            contents = [
                http.get(f"{base}{export_path}/content", headers=headers)
                for base in (first.url, second.url)
            ]
            assert [c.status_code for c in contents] == [200, 200]
            assert contents[0].content == contents[1].content
            assert b"exported through S3" in contents[0].content

            jobs.terminate()
            assert jobs.wait(timeout=60) == 0
            jobs = None
            rows = asyncio.run(evidence_keys(postgres_url))
            weed.stop()
            small = {"file": ("small.txt", b"while storage is down", "text/plain")}
            big = {"file": ("big.bin", secrets.token_bytes(SIZE), "application/octet-stream")}
            for base, files in ((first.url, small), (second.url, big)):
                assert_unavailable(http.post(f"{base}/v1/evidence", files=files, headers=headers))
            for base in (first.url, second.url):
                assert_unavailable(http.get(f"{base}{path}", headers=headers))
            during = http.post(f"{second.url}/v1/recognitions", json=thanks, headers=headers)
            assert during.status_code == 201, during.text
            assert asyncio.run(evidence_keys(postgres_url)) == rows  # nothing half-written
            asyncio.run(weed.restart())
            for _ in range(100):  # bounded: 100 × 0.2 s; the breaker waits at most 4 s
                back = http.post(f"{first.url}/v1/evidence", files=small, headers=headers)
                if back.status_code == 201:
                    break
                assert_unavailable(back)
                time.sleep(0.2)
            assert back.status_code == 201, back.text
            again = http.get(f"{second.url}{path}", headers=headers)
            assert (again.status_code, again.content) == (200, data)
        stored = set(asyncio.run(object_keys(weed, prefix)))
        keys = asyncio.run(evidence_keys(postgres_url))
        assert len(keys) == len(rows) + 1
        assert {f"{prefix}/{key}" for key in keys} <= stored  # no row without its bytes
        for index in range(2):
            assert not (tmp_path / f"replica-{index}" / "blobs").exists()  # all went to S3
    finally:
        if jobs is not None:
            jobs.terminate()
            jobs.wait(timeout=60)
        for server in started:
            server.stop()

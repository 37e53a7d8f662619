"""Evidence downloads honour ``Range`` (206, 416) and ``If-None-Match`` (304), on the
local store and on S3 (real SeaweedFS) alike: the same app, only KEEL_STORAGE_URL differs."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import httpx
import pytest
from tests.support.app import World, make_settings
from tests.support.seaweedfs import SeaweedFS

from keel.settings import Settings

PROBLEM = "application/problem+json"
DATA = secrets.token_bytes(300_000)
ETAG = f'"{hashlib.sha256(DATA).hexdigest()}"'


@pytest.fixture
def backend() -> str:
    return "sqlite"  # downloads do not depend on the database


@pytest.fixture(params=["local", "seaweedfs"])
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Settings:
    storage: dict[str, object] = {}
    if request.param == "seaweedfs":
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        storage = server.settings(f"ranges-{secrets.token_hex(6)}")
    return make_settings(database_url, str(tmp_path / "blobs"), **storage)


async def uploaded(client: httpx.AsyncClient, world: World) -> str:
    files = {"file": ("data.bin", DATA, "application/octet-stream")}
    created = await client.post("/v1/evidence", files=files, headers=world.alice.headers)
    assert created.status_code == 201, created.text
    return f"/v1/evidence/{created.json()['id']}/content"


async def test_a_range_answers_206_with_exactly_those_bytes(
    client: httpx.AsyncClient, world: World
) -> None:
    path = await uploaded(client, world)
    size = len(DATA)
    cases = {
        "bytes=0-0": (0, 1),
        "bytes=100-65635": (100, 65636),  # across the 64 KiB read chunk
        f"bytes={size - 10}-": (size - 10, size),
        "bytes=-5": (size - 5, size),
        f"bytes=1000-{size + 999}": (1000, size),  # an end past the file is clipped
    }
    for header, (start, end) in cases.items():
        got = await client.get(path, headers={**world.alice.headers, "Range": header})
        assert got.status_code == 206, (header, got.text)
        assert got.content == DATA[start:end], header
        assert got.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        assert got.headers["content-length"] == str(end - start)
        assert got.headers["etag"] == ETAG


async def test_whole_file_when_there_is_no_usable_range(
    client: httpx.AsyncClient, world: World
) -> None:
    path = await uploaded(client, world)
    for extra in (
        {},
        {"Range": "bytes=0-1,5-9"},  # several ranges: ignored, the whole file instead
        {"Range": "items=0-1"},
        {"Range": "bytes=9-2"},
        {"Range": "bytes=0-1", "If-Range": '"an-older-version"'},
    ):
        got = await client.get(path, headers={**world.alice.headers, **extra})
        assert got.status_code == 200, (extra, got.text)
        assert got.content == DATA
        assert got.headers["accept-ranges"] == "bytes"
        assert got.headers["etag"] == ETAG
    ranged = {"Range": "bytes=0-1", "If-Range": ETAG}
    got = await client.get(path, headers={**world.alice.headers, **ranged})
    assert (got.status_code, got.content) == (206, DATA[:2])


async def test_an_unsatisfiable_range_is_416_problem(
    client: httpx.AsyncClient, world: World
) -> None:
    path = await uploaded(client, world)
    for header in (f"bytes={len(DATA)}-", "bytes=-0"):
        got = await client.get(path, headers={**world.alice.headers, "Range": header})
        assert got.status_code == 416, (header, got.text)
        assert got.headers["content-type"] == PROBLEM
        assert got.headers["content-range"] == f"bytes */{len(DATA)}"
        assert got.json()["type"] == "https://keel.dev/problems/range-not-satisfiable"


async def test_a_current_etag_is_304_without_a_body(
    client: httpx.AsyncClient, world: World
) -> None:
    path = await uploaded(client, world)
    for header in (ETAG, f'"other", W/{ETAG}', "*"):
        got = await client.get(path, headers={**world.alice.headers, "If-None-Match": header})
        assert got.status_code == 304, (header, got.text)
        assert got.content == b""
        assert got.headers["etag"] == ETAG
    stale = await client.get(path, headers={**world.alice.headers, "If-None-Match": '"old"'})
    assert (stale.status_code, stale.content) == (200, DATA)

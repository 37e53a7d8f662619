"""The blob-store contract, run on every store: the local directory and real SeaweedFS.

Whatever holds the bytes, a blob is addressed by its SHA-256, visible only once
committed, readable whole or by range, and an aborted (or abandoned, then collected)
write leaves nothing behind. The S3 store's part size is the S3 minimum (5 MiB), so a
12 MiB blob goes as a three-part multipart upload.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.support.seaweedfs import SeaweedFS, leftovers, object_keys

from keel.errors import NotFound
from keel.settings import Settings
from keel.storage import BlobStore, from_settings
from keel.storage.base import content_key
from keel.storage.s3 import S3Store

PART = 5 * 1024 * 1024
BIG = 12 * 1024 * 1024 + 123  # three parts, the last one short


@dataclass
class Harness:
    store: BlobStore
    leftovers: Callable[[], Awaitable[list[str]]]
    stored: Callable[[], Awaitable[list[str]]]


@pytest.fixture(params=["local", "seaweedfs"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "local":
        root = tmp_path / "blobs"
        store = from_settings(Settings(storage_url=f"file://{root}"))

        async def local_leftovers() -> list[str]:
            return sorted(p.name for p in (root / "tmp").glob("*")) if root.exists() else []

        async def local_stored() -> list[str]:
            found = root.rglob("*") if root.exists() else iter(())
            return sorted(str(p.relative_to(root)) for p in found if p.is_file())

        harness = Harness(store, local_leftovers, local_stored)
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        prefix = f"contract-{secrets.token_hex(6)}"
        settings = Settings.model_validate(
            {**server.settings(prefix), "storage_s3_part_size_bytes": PART}
        )
        store = from_settings(settings)

        async def s3_leftovers() -> list[str]:
            return await leftovers(server, prefix)

        async def s3_stored() -> list[str]:
            return await object_keys(server, prefix)

        harness = Harness(store, s3_leftovers, s3_stored)
    try:
        yield harness
    finally:
        await harness.store.aclose()


async def put(store: BlobStore, data: bytes, *, chunk: int = 1024 * 1024) -> str:
    writer = await store.begin_write("evidence/org1")
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    blob = await writer.commit()
    assert blob.size == len(data)
    return blob.key


async def read_all(store: BlobStore, key: str, **window: int) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, **window)])


@pytest.mark.parametrize("size", [0, 1000, BIG], ids=["empty", "small", "multipart"])
async def test_a_committed_blob_reads_back_byte_exact_under_its_sha256(
    harness: Harness, size: int
) -> None:
    data = secrets.token_bytes(size)
    digest = hashlib.sha256(data).hexdigest()
    key = await put(harness.store, data)
    assert key == content_key("evidence/org1", digest)
    assert await harness.store.exists(key)
    assert await read_all(harness.store, key) == data
    assert await harness.leftovers() == []


async def test_equal_bytes_are_kept_once(harness: Harness) -> None:
    data = secrets.token_bytes(2048)
    first, second = await put(harness.store, data), await put(harness.store, data, chunk=100)
    assert first == second
    assert len(await harness.stored()) == 1


async def test_a_blob_is_invisible_until_committed_and_an_abort_leaves_nothing(
    harness: Harness,
) -> None:
    data = secrets.token_bytes(PART + 4096)  # one part already sent to S3
    key = content_key("evidence/org1", hashlib.sha256(data).hexdigest())
    writer = await harness.store.begin_write("evidence/org1")
    await writer.write(data)
    assert not await harness.store.exists(key)
    with pytest.raises(NotFound):
        await read_all(harness.store, key)
    await writer.abort()
    assert not await harness.store.exists(key)
    assert await harness.leftovers() == []
    assert await harness.stored() == []


async def test_an_abandoned_write_is_collected(harness: Harness) -> None:
    writer = await harness.store.begin_write("evidence/org1")
    await writer.write(secrets.token_bytes(PART + 1))  # a crash: neither commit nor abort
    assert await harness.leftovers() != []
    past = datetime.now(UTC) - timedelta(hours=1)
    assert await harness.store.collect_abandoned(past) == 0  # too young to be abandoned
    assert await harness.leftovers() != []
    removed = await harness.store.collect_abandoned(datetime.now(UTC) + timedelta(minutes=1))
    assert removed >= 1
    assert await harness.leftovers() == []
    await writer.abort()  # the writer's own cleanup after collection is harmless


WINDOWS = [(0, 1), (10, 100), (PART - 3, 10), (BIG - 7, 7), (BIG - 7, None), (2 * PART, None)]


async def test_ranged_reads_return_exactly_the_requested_bytes(harness: Harness) -> None:
    data = secrets.token_bytes(BIG)
    key = await put(harness.store, data)
    for offset, length in WINDOWS:
        window = {"offset": offset} if length is None else {"offset": offset, "length": length}
        end = None if length is None else offset + length
        assert await read_all(harness.store, key, **window) == data[offset:end], (offset, length)


async def test_a_missing_blob_is_not_found_and_deleting_it_is_harmless(harness: Harness) -> None:
    stored = await put(harness.store, b"short-lived")
    key = content_key("evidence/org1", "ab" * 32)
    assert not await harness.store.exists(key)
    with pytest.raises(NotFound):
        await read_all(harness.store, key)
    await harness.store.delete(key)
    await harness.store.delete(stored)
    assert not await harness.store.exists(stored)
    assert await harness.stored() == []


async def test_the_probe_leaves_nothing_behind(harness: Harness) -> None:
    await harness.store.probe()
    assert await harness.stored() == []
    assert await harness.leftovers() == []


async def test_an_s3_upload_holds_at_most_one_part_in_memory(seaweedfs: SeaweedFS) -> None:
    """Two uploads of two and a half parts each, fed a chunk at a time: after every
    chunk each holds at most the part it is filling — the part it sent was released
    by the store, botocore and aiohttp alike — and nothing once committed."""
    prefix = f"parts-{secrets.token_hex(6)}"
    settings = Settings.model_validate(
        {**seaweedfs.settings(prefix), "storage_s3_part_size_bytes": PART}
    )
    store = from_settings(settings)
    assert isinstance(store, S3Store)
    data = [secrets.token_bytes(2 * PART + PART // 2) for _ in range(2)]
    chunk = 512 * 1024
    try:
        writers = [await store.begin_write("evidence/org1") for _ in data]
        seen = set()
        for start in range(0, len(data[0]), chunk):
            for writer, blob in zip(writers, data, strict=True):
                await writer.write(blob[start : start + chunk])
            seen.add(store.parts_in_memory())
            assert store.parts_in_memory() <= len(writers)
        assert max(seen) == len(writers)  # the instrument counts what is held
        keys = [(await writer.commit()).key for writer in writers]
        assert store.parts_in_memory() == 0
        for key, blob in zip(keys, data, strict=True):
            assert await read_all(store, key) == blob
    finally:
        await store.aclose()

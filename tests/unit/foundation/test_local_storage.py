"""The local directory store: atomic, content-addressed, and loud when the disk fails."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from keel.errors import NotFound, StorageUnavailable
from keel.storage import LocalDirectoryStore


async def put(store: LocalDirectoryStore, data: bytes, namespace: str = "evidence/org1") -> str:
    writer = await store.begin_write(namespace)
    for i in range(0, len(data), 1000):
        await writer.write(data[i : i + 1000])
    return (await writer.commit()).key


async def test_commit_stores_under_the_content_address(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    data = os.urandom(5000)
    key = await put(store, data)
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"evidence/org1/{digest[:2]}/{digest}"
    assert b"".join([c async for c in store.read(key)]) == data
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_abort_leaves_nothing(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    writer = await store.begin_write("evidence/org1")
    await writer.write(b"partial")
    await writer.abort()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_missing_blob_is_not_found_and_keys_cannot_escape(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    with pytest.raises(NotFound):
        await anext(store.read("evidence/org1/ab/" + "ab" * 32))
    with pytest.raises(NotFound):
        store.path_for("../../etc/passwd")


async def test_removed_directory_is_storage_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalDirectoryStore(root)
    await store.probe()
    root.rename(tmp_path / "moved")
    root.write_bytes(b"a file where the directory was")  # mkdir of tmp/ now fails
    with pytest.raises(StorageUnavailable):
        await store.probe()

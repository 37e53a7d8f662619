"""Blobs in a local directory, written atomically and addressed by content.

A write goes to a temporary file inside the store's own ``tmp/`` (same
filesystem, so the final ``rename`` is atomic), is fsync-ed, then renamed to
``<namespace>/<sha256[:2]>/<sha256>``. A reader therefore sees either the whole
blob or none of it, and identical bytes in one namespace are kept once.
Disk errors surface as :class:`~keel.errors.StorageUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import IO, TypeVar

from keel.errors import NotFound, StorageUnavailable
from keel.storage.base import (
    KEY,
    READ_CHUNK,
    StoredBlob,
    check_namespace,
    content_key,
    probe_round_trip,
)

_T = TypeVar("_T")


async def _io(function: Callable[[], _T]) -> _T:
    try:
        return await asyncio.to_thread(function)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise StorageUnavailable(f"file storage failed: {error.strerror or error}") from error


class _LocalWriter:
    def __init__(self, store: LocalDirectoryStore, namespace: str, handle: IO[bytes], path: Path):
        self._store = store
        self._namespace = namespace
        self._handle = handle
        self._path = path
        self._hash = hashlib.sha256()
        self._size = 0
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)
        await _io(lambda: self._handle.write(chunk))

    async def commit(self) -> StoredBlob:
        digest = self._hash.hexdigest()
        key = content_key(self._namespace, digest)
        final = self._store.path_for(key)

        def finish() -> None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._path, final)
            _fsync_dir(final.parent)

        try:
            await _io(finish)
        except BaseException:
            await self.abort()
            raise
        self._closed = True
        return StoredBlob(key=key, size=self._size, sha256=digest)

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True

        def discard() -> None:
            with contextlib.suppress(OSError):
                self._handle.close()
            with contextlib.suppress(OSError):
                self._path.unlink()

        await asyncio.to_thread(discard)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalDirectoryStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._tmp = self.root / "tmp"
        # The root is created on first use only. If it vanishes later (a volume
        # unmounted, a directory removed), recreating it would quietly write to
        # whatever disk is underneath: that is an outage to report, not to paper over.
        self._root_created = False

    def path_for(self, key: str) -> Path:
        if not KEY.match(key):
            raise NotFound("no such file")
        return self.root / key

    async def begin_write(self, namespace: str) -> _LocalWriter:
        check_namespace(namespace)
        path = self._tmp / f"{secrets.token_hex(16)}.part"

        def open_temp() -> IO[bytes]:
            if not self._root_created:
                self.root.mkdir(parents=True, exist_ok=True)
                self._root_created = True
            self._tmp.mkdir(exist_ok=True)
            return path.open("xb")

        try:
            handle = await _io(open_temp)
        except FileNotFoundError as error:
            raise StorageUnavailable("file storage directory is missing") from error
        return _LocalWriter(self, namespace, handle, path)

    async def read(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            handle = await _io(lambda: path.open("rb"))
        except FileNotFoundError as error:
            if not await _io(self.root.is_dir):
                raise StorageUnavailable("file storage directory is missing") from error
            raise NotFound("file content is gone") from error
        try:
            if offset:
                await _io(functools.partial(handle.seek, offset))
            remaining = length
            while remaining is None or remaining > 0:
                size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await _io(functools.partial(handle.read, size))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            await _io(path.unlink)

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        return await _io(path.is_file)

    async def probe(self) -> None:
        await probe_round_trip(self)

    async def collect_abandoned(self, before: datetime) -> int:
        """Temporary files of writes that never finished (a crash between open and
        rename): invisible to readers, removed once older than ``before``."""
        cutoff = before.timestamp()

        def sweep() -> int:
            removed = 0
            if not self._tmp.is_dir():
                return 0
            for part in self._tmp.glob("*.part"):
                with contextlib.suppress(FileNotFoundError):
                    if part.stat().st_mtime < cutoff:
                        part.unlink()
                        removed += 1
            return removed

        return await _io(sweep)

    async def aclose(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

"""The storage seam.

Writes are streamed: a caller opens a :class:`BlobWriter`, feeds it chunks as
they arrive from the network, and only ``commit()`` makes the bytes visible,
under a content address (``namespace/sha256[:2]/sha256``). An upload that breaks a
limit half-way is ``abort()``-ed and leaves nothing behind; what an outage keeps
``abort()`` from removing (a temporary file, an unfinished multipart upload) is
never visible and is removed later by ``collect_abandoned``.

Reads stream too, whole or a byte range of a committed blob: the HTTP layer
answers ``Range`` requests from the size it keeps in the database and asks the
store for exactly those bytes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from keel.errors import StorageUnavailable

NAMESPACE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")
KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*/[0-9a-f]{2}/[0-9a-f]{64}$")
READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size: int
    sha256: str


def content_key(namespace: str, sha256: str) -> str:
    """Where bytes with this digest live in a namespace: equal bytes, one key."""
    return f"{namespace}/{sha256[:2]}/{sha256}"


def content_etag(key: str) -> str:
    """The strong ETag of a blob stored under :func:`content_key`: its quoted SHA-256.

    The bytes under a content key never change, so the digest is a validator."""
    return f'"{key.rsplit("/", 1)[-1]}"'


def check_namespace(namespace: str) -> None:
    if not NAMESPACE.match(namespace):
        raise ValueError(f"invalid storage namespace {namespace!r}")


class BlobWriter(Protocol):
    @property
    def size(self) -> int: ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> StoredBlob: ...

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    async def begin_write(self, namespace: str) -> BlobWriter: ...

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream a committed blob, or ``length`` bytes of it from ``offset``;
        raises ``NotFound`` if it is gone."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def probe(self) -> None:
        """Write, read back and delete a probe object; raises when storage is unusable."""
        ...

    async def collect_abandoned(self, before: datetime) -> int:
        """Remove unfinished writes started before ``before``; returns how many."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


async def probe_round_trip(store: BlobStore) -> None:
    """The probe every store runs: random bytes written, read back and deleted."""
    payload = secrets.token_bytes(32)
    writer = await store.begin_write("_probe")
    try:
        await writer.write(payload)
        blob = await writer.commit()
    except BaseException:
        await writer.abort()
        raise
    try:
        data = b"".join([chunk async for chunk in store.read(blob.key)])
        if data != payload:
            raise StorageUnavailable("file storage read back different bytes")
    finally:
        await store.delete(blob.key)

"""The storage seam.

Writes are streamed: a caller opens a :class:`BlobWriter`, feeds it chunks as
they arrive from the network, and only ``commit()`` makes the bytes visible,
under a content address (``namespace/sha256``). An upload that breaks a limit
half-way is ``abort()``-ed and leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size: int
    sha256: str


class BlobWriter(Protocol):
    @property
    def size(self) -> int: ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> StoredBlob: ...

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    async def begin_write(self, namespace: str) -> BlobWriter: ...

    def read(self, key: str) -> AsyncIterator[bytes]:
        """Stream a committed blob; raises ``NotFound`` if it is gone."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def probe(self) -> None:
        """Write, read back and delete a probe object; raises when storage is unusable."""
        ...

"""A :class:`BlobStore` whose every operation goes through the ``storage`` dependency.

Timeout, bulkhead, breaker and retry wrap each call to the store underneath, so a
hanging or failing disk costs a request a bounded wait and, once the breaker opens,
nothing at all: calls fail fast with 503 until probes find storage healthy again.

What is retried: reads (opening a blob and its first chunk), ``exists``, ``delete`` and
the probe are idempotent. Writes are not retried — a stream's chunk cannot be replayed
by this layer, and ``commit`` is the moment bytes become visible; a failed upload is the
client's to retry, with its idempotency key. ``abort`` is cleanup and bypasses the
breaker (it must run even when the breaker is open, and never fails the caller).

Every failure reaches the caller as :class:`~keel.errors.StorageUnavailable` (503 with
``Retry-After``): a client asks "can I upload?", not "which layer said no", so the
breaker's rejection, a timeout and a disk error all answer with one problem type; the
``reason`` extension says which it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from keel.errors import DependencyUnavailable, StorageUnavailable
from keel.resilience import Dependency
from keel.storage.base import BlobStore, BlobWriter, StoredBlob

T = TypeVar("T")


def as_storage_error(error: DependencyUnavailable) -> StorageUnavailable:
    """The one error a storage caller sees, keeping the layer's ``Retry-After``."""
    if isinstance(error, StorageUnavailable):
        return error
    return StorageUnavailable(
        f"file storage unavailable: {error.detail}",
        retry_after=error.retry_after,
        reason=error.slug,
    )


class ResilientBlobStore:
    """Decorates a :class:`BlobStore` with the ``storage`` dependency's protections."""

    def __init__(self, inner: BlobStore, dependency: Dependency) -> None:
        self.inner = inner
        self.dependency = dependency

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: object, idempotent: bool) -> T:
        try:
            return await self.dependency.call(fn, *args, idempotent=idempotent)
        except DependencyUnavailable as error:
            translated = as_storage_error(error)
            if translated is error:
                raise
            raise translated from error

    async def begin_write(self, namespace: str) -> BlobWriter:
        writer = await self._call(self.inner.begin_write, namespace, idempotent=False)
        return _ResilientWriter(writer, self)

    async def read(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a blob. Opening it and reading its first chunk are retried together
        (a fresh iterator each attempt); later chunks are bounded but not retried."""

        async def open_first() -> tuple[AsyncIterator[bytes], bytes | None]:
            chunks = aiter(self.inner.read(key, offset=offset, length=length))
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                return chunks, None
            except BaseException:
                await _close(chunks)
                raise
            return chunks, first

        chunks, first = await self._call(open_first, idempotent=True)
        try:
            if first is None:
                return
            yield first
            while True:
                chunk = await self._call(_next_or_none, chunks, idempotent=False)
                if chunk is None:
                    return
                yield chunk
        finally:
            await _close(chunks)

    async def delete(self, key: str) -> None:
        await self._call(self.inner.delete, key, idempotent=True)

    async def exists(self, key: str) -> bool:
        return await self._call(self.inner.exists, key, idempotent=True)

    async def probe(self) -> None:
        await self._call(self.inner.probe, idempotent=True)

    async def collect_abandoned(self, before: datetime) -> int:
        return await self._call(self.inner.collect_abandoned, before, idempotent=True)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _ResilientWriter:
    def __init__(self, inner: BlobWriter, store: ResilientBlobStore) -> None:
        self._inner = inner
        self._store = store

    @property
    def size(self) -> int:
        return self._inner.size

    async def write(self, chunk: bytes) -> None:
        await self._store._call(self._inner.write, chunk, idempotent=False)

    async def commit(self) -> StoredBlob:
        return await self._store._call(self._inner.commit, idempotent=False)

    async def abort(self) -> None:
        await self._inner.abort()


async def _next_or_none(chunks: AsyncIterator[bytes]) -> bytes | None:
    return await anext(chunks, None)


async def _close(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()

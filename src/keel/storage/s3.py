"""Blobs in an S3 bucket (AWS S3, SeaweedFS, MinIO, …), addressed by content.

The client is aiobotocore: the S3 API's own model (botocore), async over aiohttp,
with every multipart call exposed one by one. Keel needs exactly those calls —
create, upload a part with its checksum, complete, *abort*, list unfinished
uploads — to promise that an aborted upload leaves nothing behind and that a
crash's leftovers are found and removed; a higher-level "put this stream" API
hides them. Retries are off in the client: the ``storage`` dependency retries.

A write keeps one part (``part_size`` plus the last chunk) in memory, never a
copy of it: the buffer that filled is the part, and it goes to the HTTP client as
a view sent one read chunk at a time (:class:`_PartBody`), so neither botocore nor
aiohttp joins the headers and the whole part into a second buffer.
:meth:`S3Store.parts_in_memory` counts the part buffers alive, for tests to hold
that bound:

- a blob that fits in one part is put at commit, straight under its content key,
  with its SHA-256 as ``x-amz-checksum-sha256``: the server refuses bytes that differ;
- a bigger one is a multipart upload to ``<prefix>/tmp/<random>``, each part sent
  with its own SHA-256. ``commit`` completes it (still under ``tmp/``, where no reader
  looks), copies it server-side to its content key — a copy appears whole or not at
  all — and deletes the temporary object. ``abort`` aborts the multipart upload.

What an outage keeps ``abort`` or that delete from removing stays under ``tmp/``,
invisible, until :meth:`S3Store.collect_abandoned` removes it. Every S3 or network
error reaches the caller as :class:`~keel.errors.StorageUnavailable` (503); a
missing key as :class:`~keel.errors.NotFound`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import secrets
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from keel.errors import NotFound, StorageUnavailable
from keel.storage.base import (
    KEY,
    READ_CHUNK,
    StoredBlob,
    check_namespace,
    content_key,
    probe_round_trip,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
TEMP = "tmp"


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://bucket/prefix``: the bucket, and the key prefix every blob lives under."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket or rest == url:
            raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
        prefix = prefix.strip("/")
        return cls(bucket=bucket, prefix=f"{prefix}/" if prefix else "")


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    part_size: int = 8 * 1024**2
    timeout_seconds: float = 10.0
    max_connections: int = 64


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """S3 and network failures in Keel's terms; nothing of botocore leaks upward."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise NotFound("file content is gone") from error
        raise StorageUnavailable(f"object storage refused the call ({code})") from error
    except (BotoCoreError, aiohttp.ClientError, OSError) as error:
        raise StorageUnavailable(f"object storage unreachable ({type(error).__name__})") from error


def _sha256_b64(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class _Part(bytearray):
    """One part's bytes as they arrive; weakly referenceable, so the store can count
    the part buffers still alive (:meth:`S3Store.parts_in_memory`)."""

    __slots__ = ("__weakref__",)


class _PartBody:
    """A part as a request body, without a copy of it.

    Given ``bytes``, aiohttp (on Python before 3.12.9) joins the request's headers
    and the whole body into one new buffer before it writes — a second part in
    memory for as long as the send takes. Given an async iterable, it writes each
    chunk as it comes: here, views of ``READ_CHUNK`` bytes of the part. botocore
    sees a seekable file (``read``/``seek``/``tell``, ``len``) for the payload
    signature, which it reads in chunks too.
    """

    def __init__(self, part: bytearray) -> None:
        self._view = memoryview(part)
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._position + size)
        chunk = self._view[self._position : end].tobytes()
        self._position = end
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: len(self._view)}
        self._position = max(0, min(len(self._view), base[whence] + offset))
        return self._position

    def tell(self) -> int:
        return self._position

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        for start in range(0, len(self._view), READ_CHUNK):
            yield self._view[start : start + READ_CHUNK]


class _S3Writer:
    def __init__(self, store: S3Store, namespace: str) -> None:
        self._store = store
        self._namespace = namespace
        self._hash = hashlib.sha256()
        self._buffer: bytearray | None = None  # made at the first chunk of each part
        self._size = 0
        self._temp_key = store.object_key(f"{TEMP}/{secrets.token_hex(16)}")
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._completed = False  # the temporary object exists and must be deleted
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        if self._closed:
            raise RuntimeError("write after commit or abort")
        self._hash.update(chunk)
        self._size += len(chunk)
        if self._buffer is None:
            self._buffer = self._store.new_part()
        self._buffer += chunk
        if len(self._buffer) >= self._store.options.part_size:
            # The whole buffer is the part (parts need not be equal, only >= 5 MiB), sent
            # as it is; the next part's buffer is made at the next chunk, once this one
            # is gone.
            part, self._buffer = self._buffer, None
            await self._send_part(part)

    async def _send_part(self, part: bytearray) -> None:
        client = await self._store.client()
        bucket = self._store.location.bucket
        with _translated():
            if self._upload_id is None:
                created = await client.create_multipart_upload(
                    Bucket=bucket, Key=self._temp_key, ChecksumAlgorithm="SHA256"
                )
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            checksum = _sha256_b64(part)
            sent = await client.upload_part(
                Bucket=bucket,
                Key=self._temp_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=_PartBody(part),  # type: ignore[arg-type]
                ChecksumSHA256=checksum,
            )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": checksum})

    async def commit(self) -> StoredBlob:
        if self._closed:
            raise RuntimeError("commit after commit or abort")
        digest = self._hash.hexdigest()
        key = content_key(self._namespace, digest)
        try:
            if self._upload_id is None:
                await self._put_whole(key)
            else:
                await self._finish_multipart(key, self._upload_id)
        except BaseException:
            await self.abort()
            raise
        self._closed = True
        self._buffer = None
        return StoredBlob(key=key, size=self._size, sha256=digest)

    async def _put_whole(self, key: str) -> None:
        client = await self._store.client()
        with _translated():
            await client.put_object(
                Bucket=self._store.location.bucket,
                Key=self._store.object_key(key),
                Body=_PartBody(self._buffer) if self._buffer else b"",  # type: ignore[arg-type]
                ChecksumSHA256=base64.b64encode(self._hash.digest()).decode(),
            )

    async def _finish_multipart(self, key: str, upload_id: str) -> None:
        if self._buffer:
            part, self._buffer = self._buffer, None
            await self._send_part(part)
        client = await self._store.client()
        bucket = self._store.location.bucket
        with _translated():
            await client.complete_multipart_upload(
                Bucket=bucket,
                Key=self._temp_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": self._parts},
            )
            self._completed = True
            await client.copy_object(
                Bucket=bucket,
                Key=self._store.object_key(key),
                CopySource={"Bucket": bucket, "Key": self._temp_key},
            )
            await client.delete_object(Bucket=bucket, Key=self._temp_key)
            self._completed = False

    async def abort(self) -> None:
        """Best effort, bounded: an outage's leftovers wait for ``collect_abandoned``."""
        if self._closed:
            return
        self._closed = True
        self._buffer = None
        if self._upload_id is None and not self._completed:
            return
        bucket = self._store.location.bucket
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._store.options.timeout_seconds):
                client = await self._store.client()
                if self._completed:
                    await client.delete_object(Bucket=bucket, Key=self._temp_key)
                elif self._upload_id is not None:
                    await client.abort_multipart_upload(
                        Bucket=bucket, Key=self._temp_key, UploadId=self._upload_id
                    )


class S3Store:
    """A :class:`~keel.storage.base.BlobStore` on one bucket and key prefix."""

    def __init__(self, location: S3Location, options: S3Options) -> None:
        self.location = location
        self.options = options
        self._client: S3Client | None = None
        self._context: Any = None
        self._opening = asyncio.Lock()
        self._parts_alive = 0

    def new_part(self) -> bytearray:
        """An empty buffer for a writer's next part, counted until it is freed."""
        part = _Part()
        self._parts_alive += 1
        weakref.finalize(part, self._part_freed)
        return part

    def _part_freed(self) -> None:
        self._parts_alive -= 1

    def parts_in_memory(self) -> int:
        """How many part buffers of this store's writers are alive now: at most one
        per upload in progress (what the client and the HTTP stack hold included,
        as they hold the part itself, not a copy)."""
        return self._parts_alive

    def object_key(self, key: str) -> str:
        return f"{self.location.prefix}{key}"

    async def client(self) -> S3Client:
        """The one client of this store, opened on first use (never at import or
        construction: it belongs to the event loop that uses it)."""
        if self._client is not None:
            return self._client
        async with self._opening:
            if self._client is None:
                options = self.options
                context = get_session().create_client(
                    "s3",
                    endpoint_url=options.endpoint_url,
                    region_name=options.region,
                    aws_access_key_id=options.access_key_id,
                    aws_secret_access_key=options.secret_access_key,
                    config=AioConfig(
                        s3={"addressing_style": "path" if options.endpoint_url else "auto"},
                        retries={"max_attempts": 1, "mode": "standard"},
                        connect_timeout=min(options.timeout_seconds, 5.0),
                        read_timeout=options.timeout_seconds,
                        max_pool_connections=options.max_connections,
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    ),
                )
                self._client = await context.__aenter__()
                self._context = context
        return self._client

    async def begin_write(self, namespace: str) -> _S3Writer:
        check_namespace(namespace)
        return _S3Writer(self, namespace)

    async def read(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        if not KEY.match(key):
            raise NotFound("no such file")
        client = await self.client()
        bucket, object_key = self.location.bucket, self.object_key(key)
        with _translated():
            if offset or length is not None:
                last = "" if length is None else str(offset + length - 1)
                response = await client.get_object(
                    Bucket=bucket, Key=object_key, Range=f"bytes={offset}-{last}"
                )
            else:
                response = await client.get_object(Bucket=bucket, Key=object_key)
        body = response["Body"]
        try:
            while True:
                with _translated():
                    chunk = await body.read(READ_CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        if not KEY.match(key):
            raise NotFound("no such file")
        client = await self.client()
        with _translated():
            await client.delete_object(Bucket=self.location.bucket, Key=self.object_key(key))

    async def exists(self, key: str) -> bool:
        if not KEY.match(key):
            raise NotFound("no such file")
        client = await self.client()
        try:
            with _translated():
                await client.head_object(Bucket=self.location.bucket, Key=self.object_key(key))
        except NotFound:
            return False
        return True

    async def probe(self) -> None:
        await probe_round_trip(self)

    async def collect_abandoned(self, before: datetime) -> int:
        """Abort multipart uploads and delete temporary objects under ``tmp/`` that
        were started before ``before`` (a writer's own abort failed, or it crashed)."""
        client = await self.client()
        bucket = self.location.bucket
        prefix = self.object_key(f"{TEMP}/")
        removed = 0
        with _translated():
            uploads = client.get_paginator("list_multipart_uploads")
            async for listed in uploads.paginate(Bucket=bucket, Prefix=prefix):
                for upload in listed.get("Uploads", []):
                    if upload["Initiated"] < before:
                        await client.abort_multipart_upload(
                            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
            objects = client.get_paginator("list_objects_v2")
            async for page in objects.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if item["LastModified"] < before:
                        await client.delete_object(Bucket=bucket, Key=item["Key"])
                        removed += 1
        return removed

    async def aclose(self) -> None:
        context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

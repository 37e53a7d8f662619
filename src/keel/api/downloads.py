"""One way to answer a file download: conditional (304), partial (206, 416) or whole.

Evidence and exports are both content-addressed blobs whose size the database
knows, so both answer ``If-None-Match``, ``Range`` and ``If-Range`` the same way
(:mod:`keel.api.conditional` does the header arithmetic), and both read the
first chunk before answering, so a missing blob is a 404 rather than a cut stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from starlette.responses import Response, StreamingResponse

from keel.api.conditional import not_modified, requested_range
from keel.api.disposition import attachment
from keel.storage import BlobStore


async def primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Read the first chunk before answering, so a missing blob is a 404, not a cut stream."""
    first = await anext(chunks, b"")

    async def rest() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk

    return rest()


@dataclass(frozen=True, slots=True)
class Download:
    """What a download answers: 304 without a body, or 200/206 with its bytes."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes] | None

    def respond(self, media_type: str, filename: str) -> Response:
        if self.body is None:
            return Response(status_code=self.status, headers=self.headers)
        return StreamingResponse(
            self.body,
            status_code=self.status,
            media_type=media_type,
            headers={**self.headers, "Content-Disposition": attachment(filename)},
        )


async def open_download(
    request_headers: Mapping[str, str], store: BlobStore, key: str, *, etag: str, size: int
) -> Download:
    """The answer to a GET of the blob under ``key``; raises ``RangeNotSatisfiable`` (416)
    or the store's ``NotFound``/``StorageUnavailable`` before any byte is sent."""
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"}
    if not_modified(request_headers.get("if-none-match"), etag):
        return Download(304, headers, None)
    wanted = requested_range(
        request_headers.get("range"), request_headers.get("if-range"), etag, size
    )
    if wanted is None:
        body = await primed(store.read(key))
        return Download(200, {**headers, "Content-Length": str(size)}, body)
    body = await primed(store.read(key, offset=wanted.start, length=wanted.length))
    headers["Content-Length"] = str(wanted.length)
    headers["Content-Range"] = wanted.content_range(size)
    return Download(206, headers, body)

"""JSON request bodies, bounded before anything parses them deeply.

Python's JSON parser recurses once per nesting level: a body of 100,000
``[`` characters is a ``RecursionError`` wherever it is parsed (the
idempotency fingerprint, FastAPI's body reading), and a large body is parsed
in one go on the event loop. So every JSON body is checked here first, by a
pure ASGI middleware in front of everything that reads bodies:

- its size, from ``Content-Length`` and again while it arrives (413);
- its nesting depth, by a linear scan of the raw bytes with string literals
  removed — no recursion, stopped at the first level past the limit (422);
- that it parses at all (400) — every malformed body (bad syntax, invalid
  UTF-8, a number with more digits than Python converts) is the same
  ``bad-request`` problem with code ``json_invalid`` that FastAPI's own parse
  failure maps to (RFC 9110: a body that cannot be parsed is a 400; 422 is for
  well-formed content that cannot be processed).

Bodies of other media types (multipart uploads) pass through untouched: their
routes stream and bound them themselves.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from keel.errors import BadRequest, InvalidInput, KeelError, PayloadTooLarge
from keel.guard.idempotency.fingerprints import is_json
from keel.http.problems import from_error
from keel.http.replayed_body import receive_replaying

MAX_JSON_BYTES = 64 * 1024
"""The largest JSON body any route takes is a recognition: 2,000 characters of
message and 20 ids, far below this."""

MAX_JSON_DEPTH = 32
"""Keel's documents nest two levels deep; this leaves room and stops recursion bombs."""

# A complete JSON string literal (escapes included); brackets inside one are not structure.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_OPEN = frozenset(b"[{")


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects deeper than ``limit``.

    Linear in the body and never recursive; a body that is not valid JSON may be
    misjudged either way, but then it fails to parse after this check anyway.
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", body))
    depth = 0
    for byte in brackets:
        if byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _too_deep(message: str) -> InvalidInput:
    return InvalidInput(
        f"the request body is not acceptable JSON: {message}",
        errors=[{"field": "body", "message": message, "code": "json_too_deep"}],
    )


def _malformed(message: str) -> BadRequest:
    return BadRequest(
        "the request body is not valid JSON",
        errors=[{"field": "body", "message": message, "code": "json_invalid"}],
    )


def check_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON body nested past ``max_depth`` (:class:`InvalidInput`) or not
    parseable (:class:`BadRequest`)."""
    if nesting_exceeds(body, max_depth):
        raise _too_deep(f"nested deeper than {max_depth} levels")
    try:
        json.loads(body)
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError, invalid UTF-8 and over-long integers.
        raise _malformed(str(error)[:200]) from None


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` if the client went away first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"a JSON body is limited to {limit} bytes", limit=limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _content_type(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return str(value.decode("latin-1"))
    return None


class JsonBodyLimits:
    """Pure ASGI middleware: JSON bodies are bounded in size and depth and parse, or 4xx."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_json(_content_type(scope)):
            await self.app(scope, receive, send)
            return
        try:
            declared = _declared_length(scope)
            if declared is not None and declared > self.max_bytes:
                raise PayloadTooLarge(
                    f"a JSON body is limited to {self.max_bytes} bytes", limit=self.max_bytes
                )
            body = await _read(receive, self.max_bytes)
            if body is None:
                return  # the client went away: nobody to answer
            if body:
                check_json(body, max_depth=self.max_depth)
        except KeelError as error:
            await from_error(error, scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive_replaying(body, receive), send)

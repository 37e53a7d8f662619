"""Fingerprints: what makes two requests under one key "the same request".

The fingerprint is SHA-256 over the method and route template and then the
body, in one of two forms:

- a JSON body (``application/json`` or ``…+json``) counts by its *canonical*
  form — keys sorted, no insignificant whitespace — so a client that
  re-serialises the same object differently is still sending the same
  request; a body that does not parse as JSON counts by its raw bytes;
- a ``multipart/form-data`` body (an upload) counts by its parts — each
  part's headers and raw bytes, in order — hashed as they stream past, so a
  25 MB file is never held in memory to be fingerprinted. The boundary is
  left out: it is framing that most client libraries draw at random for every
  attempt, and a retry that re-encodes the same file must still be the same
  request. A body that does not parse as multipart counts by its raw bytes;
- any other body counts by its raw bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

_JSON_MEDIA = ("application/json",)


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in _JSON_MEDIA or media.endswith("+json")


def canonical_json(body: bytes) -> bytes | None:
    """The canonical encoding of a JSON document, or ``None`` if ``body`` is not JSON."""
    try:
        document: Any = json.loads(body)
        # An unpaired surrogate escape parses but cannot be encoded as UTF-8: such a
        # body (refused later by the route) counts by its raw bytes, as non-JSON does.
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
        ).encode()
    except (ValueError, RecursionError):
        return None


class BodyHasher:
    """Fingerprints a body fed in chunks; ``digest()`` once the last chunk is in."""

    def __init__(self, operation: str, form: str = "raw") -> None:
        # The form is hashed in so a raw body can never collide with a canonical JSON one.
        self._hash = hashlib.sha256(f"{operation}\n{form}:".encode())
        self.size = 0
        self.finished = False

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        self.finished = True
        return self._hash.hexdigest()


class MultipartHasher:
    """Fingerprints a multipart body by its parts, not its boundary, while it streams."""

    def __init__(self, operation: str, boundary: bytes) -> None:
        self._parts = BodyHasher(operation, "multipart")
        self._raw = BodyHasher(operation, "raw")
        self._field = b""
        self._value = b""
        self._broken = False
        callbacks = {
            "on_part_begin": lambda: self._parts.update(b"\x00part\x00"),
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": lambda: self._parts.update(b"\x00data\x00"),
            "on_part_data": lambda data, start, end: self._parts.update(data[start:end]),
            "on_part_end": lambda: self._parts.update(b"\x00end\x00"),
        }
        self._parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._parts.update(self._field.lower().strip() + b":" + self._value.strip() + b"\x00")
        self._field = self._value = b""

    @property
    def size(self) -> int:
        return self._raw.size

    def update(self, chunk: bytes) -> None:
        self._raw.update(chunk)
        if self._broken:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            self._broken = True

    def finish(self) -> str:
        if not self._broken:
            try:
                self._parser.finalize()
            except MultipartParseError:
                self._broken = True
        raw = self._raw.finish()
        return raw if self._broken else self._parts.finish()


def streaming_hasher(operation: str, content_type: str | None) -> BodyHasher | MultipartHasher:
    """The hasher for a body that is fingerprinted as it streams."""
    media, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if media == b"multipart/form-data" and boundary:
        return MultipartHasher(operation, boundary)
    return BodyHasher(operation, "raw")


def fingerprint(operation: str, body: bytes, content_type: str | None) -> str:
    """The fingerprint of a whole, already-read body."""
    canonical = canonical_json(body) if is_json(content_type) else None
    hasher = BodyHasher(operation, "raw" if canonical is None else "json")
    hasher.update(body if canonical is None else canonical)
    return hasher.finish()

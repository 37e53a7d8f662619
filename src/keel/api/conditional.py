"""Conditional and partial downloads: ``If-None-Match`` (304) and ``Range`` (206, 416).

Pure header arithmetic over what the database already knows about a file — its
size and its ETag (the quoted SHA-256) — so a 304 or a 416 never touches storage,
and a 206 asks the store for exactly the bytes it sends. One range per request:
a multi-range or malformed ``Range`` is ignored and the whole file is sent, as
RFC 9110 §14.2 allows; ``If-Range`` with another validator also means "whole file".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.errors import RangeNotSatisfiable

_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    length: int

    @property
    def last(self) -> int:
        return self.start + self.length - 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.last}/{size}"


def _opaque(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names the current ETag (weak comparison, §13.1.2)."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(_opaque(tag) == etag for tag in if_none_match.split(","))


def _single_range(range_header: str | None, if_range: str | None, etag: str) -> tuple[str, str]:
    """The ``first-last`` of a range to honour, or ``("", "")`` to send everything."""
    if range_header is None or (if_range is not None and if_range.strip() != etag):
        return "", ""  # If-Range: strong comparison (§13.1.5)
    match = _SINGLE_RANGE.match(range_header.strip())
    if match is None:
        return "", ""
    first, last = match.groups()
    if first and last and int(last) < int(first):
        return "", ""  # invalid, so ignored
    return first, last


def requested_range(
    range_header: str | None, if_range: str | None, etag: str, size: int
) -> ByteRange | None:
    """The one byte range to send, or ``None`` for the whole file.

    Raises :class:`RangeNotSatisfiable` when the range starts past the end (or asks
    for the last zero bytes)."""
    first, last = _single_range(range_header, if_range, etag)
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        start = max(0, size - int(last))
        return ByteRange(start, size - start)
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = size - 1 if not last else min(int(last), size - 1)
    return ByteRange(start, end - start + 1)

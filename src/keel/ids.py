"""Sortable identifiers: UUIDv7 (RFC 9562).

A UUIDv7 starts with a millisecond timestamp, so ids sort by creation time and
keyset pagination on ``id`` alone is stable. Within one millisecond a counter in
the random bits keeps ids from one process strictly increasing.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def _uuid7_ints(count: int, now_ms: int | None) -> list[int]:
    global _last_ms, _counter  # noqa: PLW0603 - process-wide monotonic sequence by design
    random = os.urandom(8 * count)
    values: list[int] = []
    with _lock:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        for index in range(count):
            if ms <= _last_ms:
                ms = _last_ms
                _counter += 1
                if _counter > 0xFFF:  # 12-bit rand_a exhausted: borrow the next millisecond
                    ms += 1
                    _counter = 0
            else:
                _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
            _last_ms = ms
            rand_b = int.from_bytes(random[8 * index : 8 * index + 8], "big") & ((1 << 62) - 1)
            value = (ms & ((1 << 48) - 1)) << 80
            value |= 0x7 << 76
            value |= (_counter & 0xFFF) << 64
            value |= 0b10 << 62
            value |= rand_b
            values.append(value)
    return values


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    return uuid.UUID(int=_uuid7_ints(1, now_ms)[0])


def new_id() -> str:
    """A new id as the canonical lowercase string stored in every table."""
    return str(uuid7())


def new_ids(count: int) -> list[str]:
    """``count`` new ids, strictly increasing, as :func:`new_id` would give them one by one.

    For batches (1,000 jobs enqueued at once): one lock and one read of the
    random source for the lot, and the canonical string formatted directly.
    """
    ids: list[str] = []
    for value in _uuid7_ints(count, None):
        text = f"{value:032x}"
        ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return ids


def is_valid_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False

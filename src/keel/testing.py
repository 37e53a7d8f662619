"""Fakes that Keel's own tests use, shipped so that users' tests can use them too.

- :class:`ManualClock`, a clock that moves only when told to;
- the memory stores: :class:`MemoryIdempotencyStore`, :class:`MemoryJobConnector`;
- :func:`capture_logs`, structlog's log capture behind Keel's own processors, so a test
  sees each line as it would be written (exceptions without locals, fields redacted and
  bounded), not the raw fields a call site passed;
- :func:`no_retry_delays`, which removes every retry backoff (stamina's ``set_testing``):
  retries still happen, at once.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from structlog.testing import LogCapture
from structlog.typing import Processor

from keel.guard.idempotency.memory import MemoryIdempotencyStore
from keel.jobs.memory import MemoryJobConnector
from keel.observe.logs import safety_processors
from keel.resilience import is_testing, set_testing
from keel.settings import Settings


class ManualClock:
    """A clock that moves only when told to; it may be moved backwards."""

    def __init__(self, start: datetime | None = None, monotonic_start: float = 1000.0) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = monotonic_start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def set(self, when: datetime) -> None:
        """Jump the wall clock (the monotonic clock is left alone, as in life)."""
        self._now = when


@contextmanager
def capture_logs(settings: Settings | None = None) -> Iterator[list[MutableMapping[str, Any]]]:
    """The structlog lines logged inside the block, each as the dict Keel would render.

    Each line gains the request context, passes Keel's safety processors
    (for ``settings``' secrets, default settings if none): ``exc_info`` arrives as an
    ``exception`` text and a secret as ``[REDACTED]``, exactly as in the written line.
    As with structlog's own ``capture_logs``, the level is under ``log_level`` and the
    previous configuration is restored on leaving.
    """
    capture = LogCapture()
    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        *safety_processors(settings or Settings()),
        capture,
    ]
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=chain)
    try:
        yield capture.entries
    finally:
        structlog.configure(processors=previous)


@contextmanager
def no_retry_delays() -> Iterator[None]:
    """Every retry inside the block happens without its backoff delay (``Retry-After``
    hints included); the switch is process-wide, and restored on leaving."""
    before = is_testing()
    set_testing(True)
    try:
        yield
    finally:
        set_testing(before)


__all__ = [
    "ManualClock",
    "MemoryIdempotencyStore",
    "MemoryJobConnector",
    "capture_logs",
    "no_retry_delays",
]

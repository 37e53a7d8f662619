"""Fakes that Keel's own tests use, shipped so that users' tests can use them too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keel.guard.idempotency.memory import MemoryIdempotencyStore
from keel.jobs.memory import MemoryJobConnector


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


__all__ = ["ManualClock", "MemoryIdempotencyStore", "MemoryJobConnector"]

"""Time as an argument.

Every time-dependent decision in Keel takes ``now`` or a :class:`Clock`, so that
tests drive time by hand (including jumps backwards) and nothing sleeps to wait
for a deadline. ``keel.testing`` ships :class:`ManualClock`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC: for timestamps people read."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps: for durations and deadlines."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()

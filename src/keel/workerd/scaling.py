"""How many worker processes the backlog asks for: the pure core of ``--autoscale``.

Two signals, both read from the database: the jobs in hand (ready or running in
the queues a process serves) and the age of the oldest ready one. The depth
says how many processes the work needs (``jobs_per_process`` each); the age
catches what depth misses — a few slow jobs that nobody is picking up — and
asks for one more process while it stays at or above ``max_age_seconds``.

Up is quick and down is slow, as Kubernetes' HPA does it: a reading that wants
more processes is followed at once (after ``up_cooldown_seconds`` since the
last event); one that wants fewer is followed only when every reading of the
last ``down_window_seconds`` wanted fewer too, then by one process at a time,
``down_cooldown_seconds`` apart. The age has a band rather than a line: it asks
for more at ``max_age_seconds`` and keeps the count until it falls below half
of that, so an age hovering at the threshold does not flap the count.

Time is an argument (monotonic seconds), so every decision is a table test.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    minimum: int
    maximum: int
    jobs_per_process: int = 20
    max_age_seconds: float = 10.0
    up_cooldown_seconds: float = 5.0
    down_cooldown_seconds: float = 60.0
    down_window_seconds: float = 120.0

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError("autoscale needs 1 ≤ MIN ≤ MAX")
        if self.jobs_per_process < 1 or self.max_age_seconds <= 0:
            raise ValueError("jobs_per_process must be ≥ 1 and max_age_seconds positive")


@dataclass(frozen=True, slots=True)
class Backlog:
    """What one reading of the served queues saw."""

    in_hand: int  # ready or running
    oldest_ready_age_seconds: float


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    direction: Direction
    before: int
    after: int
    wanted: int
    backlog: Backlog


def parse_range(text: str) -> tuple[int, int]:
    """``"2..8"`` → ``(2, 8)``; ``"3"`` → ``(3, 3)``."""
    low, dots, high = text.strip().partition("..")
    try:
        minimum = int(low)
        maximum = int(high) if dots else minimum
    except ValueError:
        raise ValueError(f"{text!r} is not MIN..MAX (two whole numbers)") from None
    if not 1 <= minimum <= maximum:
        raise ValueError(f"{text!r}: need 1 ≤ MIN ≤ MAX")
    return minimum, maximum


class Autoscaler:
    """The process count to run, from one backlog reading at a time."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self.count = policy.minimum
        self._last_event = -math.inf
        self._first_reading: float | None = None
        self._wanted: deque[tuple[float, int]] = deque()

    def wanted(self, backlog: Backlog) -> int:
        """The count this reading alone asks for, within MIN..MAX."""
        policy = self.policy
        wanted = math.ceil(backlog.in_hand / policy.jobs_per_process)
        age = backlog.oldest_ready_age_seconds
        if age >= policy.max_age_seconds:
            wanted = max(wanted, self.count + 1)
        elif age >= policy.max_age_seconds / 2:
            wanted = max(wanted, self.count)  # inside the band: hold
        return min(policy.maximum, max(policy.minimum, wanted))

    def observe(self, now: float, backlog: Backlog) -> ScaleEvent | None:
        """Take one reading at ``now``; returns the scale event it causes, if any."""
        policy = self.policy
        wanted = self.wanted(backlog)
        if self._first_reading is None:
            self._first_reading = now
        self._wanted.append((now, wanted))
        while self._wanted and self._wanted[0][0] < now - policy.down_window_seconds:
            self._wanted.popleft()
        since_event = now - self._last_event
        if wanted > self.count and since_event >= policy.up_cooldown_seconds:
            return self._scale(now, Direction.UP, wanted, wanted, backlog)
        if wanted >= self.count or since_event < policy.down_cooldown_seconds:
            return None
        if now - self._first_reading < policy.down_window_seconds:
            return None  # not watched for a whole window yet
        held = max(count for _at, count in self._wanted)
        if held >= self.count:
            return None
        return self._scale(now, Direction.DOWN, max(held, self.count - 1), wanted, backlog)

    def _scale(
        self, now: float, direction: Direction, after: int, wanted: int, backlog: Backlog
    ) -> ScaleEvent:
        event = ScaleEvent(direction, self.count, after, wanted, backlog)
        self.count = after
        self._last_event = now
        return event

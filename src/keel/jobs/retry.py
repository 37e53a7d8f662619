"""Retry schedules: exponential backoff with full jitter, as pure arithmetic.

The delay before attempt ``n + 1`` is drawn uniformly from
``[0, min(cap, base · 2**(n - 1))]`` — "full jitter" (AWS Architecture Blog,
*Exponential Backoff and Jitter*), which spreads retries of jobs that failed
together instead of marching them back in lockstep. ``now`` and the random
draw are arguments, so tests are tables over made-up times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from keel.jobs.states import JobState

_SYSTEM_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 2.0
    cap_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError("backoff seconds must not be negative")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)  # 2**62 already dwarfs any cap
        return float(min(self.cap_seconds, self.base_seconds * (2**exponent)))

    def delay(self, attempt: int, draw: float) -> float:
        """Full jitter: ``draw`` in [0, 1) picks a point in ``[0, ceiling]``."""
        if not 0.0 <= draw <= 1.0:
            raise ValueError("draw must be in [0, 1]")
        return self.ceiling(attempt) * draw


@dataclass(frozen=True)
class Outcome:
    """Where a failed attempt sends the job."""

    state: JobState
    run_at: datetime | None


def after_failure(
    policy: RetryPolicy,
    *,
    attempt: int,
    max_attempts: int,
    now: datetime,
    draw: float | None = None,
    not_before: float | None = None,
) -> Outcome:
    """``retrying`` at a jittered time while attempts remain, else ``dead``.

    ``max_attempts`` is the job's own (set at enqueue, defaulting to the policy's).
    ``not_before`` (seconds) is the other side's ``Retry-After``: the retry is never
    earlier, and never later than the policy's cap because of it.
    """
    if attempt >= max_attempts:
        return Outcome(JobState.DEAD, None)
    chosen = _SYSTEM_RANDOM.random() if draw is None else draw
    delay = policy.delay(attempt, chosen)
    if not_before is not None:
        delay = max(delay, min(not_before, policy.cap_seconds))
    return Outcome(JobState.RETRYING, now + timedelta(seconds=delay))


def deferral(retry_after: float, *, now: datetime, draw: float | None = None) -> datetime:
    """When a deferred job runs again: after ``retry_after``, plus up to half of it more.

    The jitter spreads the jobs one open breaker deferred together, so they do not all
    come back at the instant it lets its few probes through.
    """
    if draw is not None and not 0.0 <= draw <= 1.0:
        raise ValueError("draw must be in [0, 1]")
    chosen = _SYSTEM_RANDOM.random() if draw is None else draw
    return now + timedelta(seconds=retry_after * (1.0 + 0.5 * chosen))

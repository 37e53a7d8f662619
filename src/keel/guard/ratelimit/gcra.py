"""GCRA, the generic cell rate algorithm, as pure arithmetic.

GCRA is a token bucket expressed with one number of state per key: the
*theoretical arrival time* (TAT), the instant at which the key would be fully
rested if no further request came. One float per key is what makes it cheap to
keep in Redis and to update atomically with a single ``GET``/``SET`` in Lua.

Time is an argument (``now``), as in Go's ``rate.Limiter.AllowN(now, n)``: the
same function serves the memory backend, is mirrored line for line by the Redis
Lua script, and is what the property tests drive with made-up clocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

EPSILON = 1e-6
"""Seconds of tolerance when comparing instants.

Epoch seconds as floats carry about 2.4e-7 s of rounding, so ``now +
retry_after`` may land a hair before the instant it was computed from. One
microsecond absorbs that, which is what makes ``retry_after`` exact (a request
made at ``now + retry_after`` is admitted). It cannot grant a whole extra cell:
policy validation keeps the emission interval above a millisecond.
"""


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` cells per ``period`` seconds, with up to ``burst`` at once."""

    limit: int
    period: float
    burst: int
    # Derived once here rather than on every decision: this is the hot path.
    emission_interval: float = field(init=False, repr=False, compare=False)
    """Seconds one cell takes to come back (T in the GCRA literature)."""
    tolerance: float = field(init=False, repr=False, compare=False)
    """How far ahead of ``now`` the TAT may run: the burst, in seconds (τ)."""

    def __post_init__(self) -> None:
        if self.limit <= 0 or self.period <= 0 or self.burst <= 0:
            raise ValueError(f"rate numbers must be positive: {self!r}")
        interval = self.period / self.limit
        object.__setattr__(self, "emission_interval", interval)
        object.__setattr__(self, "tolerance", interval * self.burst)

    def scaled(self, divisor: int) -> Rate:
        """This rate shared by ``divisor`` independent instances (at least 1 each)."""
        if divisor <= 1:
            return self
        return Rate(
            limit=max(1, self.limit // divisor),
            period=self.period,
            burst=max(1, self.burst // divisor),
        )


class GcraDecision(NamedTuple):
    """The outcome of one GCRA step.

    ``remaining`` is how many further cells would be admitted right now;
    ``reset_after`` is the wait until the key is fully rested (its whole burst
    back); ``retry_after`` is 0 when allowed, else the exact wait until this
    same request would be admitted (``inf`` if it never can: cost > burst).
    ``tat`` is the state to store: the new TAT when allowed; when denied,
    the stored TAT, lowered to ``now + tolerance`` if a backwards clock left
    it beyond that.

    A named tuple rather than a frozen dataclass: equally immutable, and
    several times cheaper to build on a path taken once per request per limit.
    """

    allowed: bool
    remaining: int
    reset_after: float
    retry_after: float
    tat: float


def gcra(tat: float | None, now: float, rate: Rate, n: int = 1) -> GcraDecision:
    """Decide whether ``n`` cells fit at ``now`` given the stored ``tat``.

    ``tat`` is ``None`` for a key never seen (or expired). ``n == 0`` peeks.
    A clock that jumped backwards leaves a TAT far in the future; it is
    clamped to ``now + tolerance`` ("fully spent"), which grants nothing extra,
    and the clamped value is returned as the state to keep so that the key
    recovers one cell per interval from the new ``now`` instead of being
    locked out for the length of the jump.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    interval = rate.emission_interval
    tolerance = rate.tolerance
    if tat is None or tat < now:
        base = now
    elif tat > now + tolerance:
        base = now + tolerance
    else:
        base = tat

    new_tat = base + n * interval
    wait = new_tat - tolerance - now
    if wait > EPSILON:
        # Denied: keep ``base`` (the stored TAT unless the clamp lowered it).
        if n > rate.burst:
            # Go's rate.Limiter answers the same: a cost above the burst never fits.
            wait = math.inf
        return GcraDecision(False, _remaining(base, now, rate), base - now, wait, base)
    return GcraDecision(True, _remaining(new_tat, now, rate), new_tat - now, 0.0, new_tat)


def _remaining(tat: float, now: float, rate: Rate) -> int:
    """Whole cells that still fit before the TAT would run past the tolerance."""
    # The epsilon keeps 3.9999999 from reading as 3; int() floors a non-negative.
    spare = (now + rate.tolerance - tat) / rate.emission_interval + 1e-9
    if spare <= 0:
        return 0
    return min(rate.burst, int(spare))

"""Calendar quotas: a count per hour, day or month in an organisation's time zone.

A rate limit smooths traffic; a quota caps a business quantity ("10
recognitions a day"), and people read "a day" on their own wall clock. So a
daily quota resets at midnight in the organisation's IANA time zone, and a day
is 23 or 25 hours long when daylight saving time starts or ends.

Quotas count *successes*: the request path reserves (counts) a unit when it
admits a request and refunds it if the operation fails, so that concurrent
requests cannot pass the limit together. This module is the pure arithmetic;
backends keep the counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from functools import cache
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

WindowPeriod = Literal["hour", "day", "month"]
_Span = tuple[tuple[float, float], str]
_Located = tuple[float, float, _Span]


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """A calendar window kind in a time zone: ``QuotaWindow("day", "Europe/London")``."""

    period: WindowPeriod
    timezone: str = "UTC"
    # The last window this instance located, as (start, end, span) in a one-slot
    # list, so it is replaced in one step and span() returns it without building a
    # tuple. A memo of a pure function: it takes no part in equality, hashing or repr.
    _last: list[_Located] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Fail at construction, not on the first request of the day.
        _zone(self.timezone)
        object.__setattr__(self, "_last", [(math.inf, -math.inf, ((0.0, 0.0), ""))])

    def bounds(self, now: float) -> tuple[float, float]:
        """Epoch seconds ``[start, end)`` of the window holding ``now``."""
        last = self._last[0]
        if last[0] <= now < last[1]:
            return last[2][0]
        return self._locate(now)[0]

    def span(self, now: float) -> _Span:
        """The window holding ``now`` and the suffix of its counter's key.

        ``key + suffix`` is :func:`counter_key` ``(key, bounds)``, with the
        suffix formatted once per window instead of once per request.
        Memoised: windows partition the timeline, so the last window located
        is still the answer whenever it holds ``now`` — true for nearly every
        request, and the calendar arithmetic costs several times more than
        the rest of a memory-backend decision.
        """
        last = self._last[0]
        if last[0] <= now < last[1]:
            return last[2]
        return self._locate(now)

    def _locate(self, now: float) -> _Span:
        memo = (self.period, self.timezone)
        bounds = _LAST_WINDOW.get(memo)
        if bounds is None or not bounds[0] <= now < bounds[1]:
            bounds = window_bounds(now, self.period, _zone(self.timezone))
            _LAST_WINDOW[memo] = bounds
        suffix = _counter_suffix(bounds)
        span = (bounds, suffix)
        self._last[0] = (bounds[0], bounds[1], span)
        return span


_LAST_WINDOW: dict[tuple[str, str], tuple[float, float]] = {}
"""The last window computed per (period, zone), shared by every instance (windows
built per call, as the quota commit path does, still find it): a memo of a pure
function, bounded by the number of zones in use times three periods."""


def window_bounds(now: float, period: WindowPeriod, tz: tzinfo) -> tuple[float, float]:
    """The calendar window ``[start, end)`` around ``now`` in ``tz``, as epoch seconds.

    Days and months are computed from local midnights, so their length follows
    DST (23 h, 25 h). Hours are local hours: in the repeated hour of a fall-back
    transition each of the two 01:00-02:00 hours is its own window (``fold``
    keeps them apart). A midnight that does not exist (zones that switch at
    00:00) maps, per PEP 495, to the transition instant: the day starts there.
    """
    # Window edges fall on whole seconds (zone offsets are whole seconds), so
    # flooring loses nothing — and it avoids fromtimestamp rounding 23:59:59.9999998
    # up into the next window.
    local = datetime.fromtimestamp(math.floor(now), tz)
    if period == "hour":
        start = local.replace(minute=0, second=0, microsecond=0).timestamp()
        return start, start + 3600.0
    if period == "day":
        day = local.date()
        return _midnight(day, tz), _midnight(day + timedelta(days=1), tz)
    first = local.date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return _midnight(first, tz), _midnight(following, tz)


def _midnight(day: date, tz: tzinfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


class QuotaDecision(NamedTuple):
    """A quota reading: ``used`` of ``limit`` in the window ending ``reset_after`` from now.

    ``allowed`` says whether ``n`` more fit (for a check) or were counted (for a
    consume). ``retry_after`` is 0 when allowed, else the wait until the window
    resets, since a calendar quota never refills before that. A named tuple,
    like :class:`~keel.guard.ratelimit.gcra.GcraDecision`: built once per
    request per quota, and several times cheaper than a frozen dataclass.
    """

    allowed: bool
    used: int
    limit: int
    reset_after: float
    retry_after: float
    window_start: float
    window_end: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


def quota_decision(
    used: int, limit: int, n: int, now: float, window: tuple[float, float]
) -> QuotaDecision:
    """Would ``n`` more fit, given ``used`` so far in ``window``?"""
    start, end = window
    reset_after = end - now if end > now else 0.0
    if used + n <= limit:
        return QuotaDecision(True, used, limit, reset_after, 0.0, start, end)
    return QuotaDecision(False, used, limit, reset_after, reset_after, start, end)


def counted(used: int, limit: int, now: float, window: tuple[float, float]) -> QuotaDecision:
    """The reading after a consume was recorded: ``used`` now includes it."""
    start, end = window
    reset_after = max(0.0, end - now)
    return QuotaDecision(True, used, limit, reset_after, 0.0, start, end)


def counter_key(key: str, window: tuple[float, float]) -> str:
    """The storage key of one window's counter: each window counts on its own key."""
    return key + _counter_suffix(window)


def _counter_suffix(window: tuple[float, float]) -> str:
    return f"@{math.floor(window[0])}"

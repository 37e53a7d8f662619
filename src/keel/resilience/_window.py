"""Sliding windows of call outcomes, with O(1) aggregates.

The breaker decides on the share of failed and slow calls among *recent* calls. Recounting
a window on every call would make the breaker's cost grow with the window, so both kinds
keep running totals and adjust them by what enters and what leaves:

* :class:`CountWindow` — the last ``size`` calls, a ring buffer of one small int per call.
* :class:`TimeWindow` — the last ``size`` seconds, a ring of per-second buckets; moving
  forward by *k* seconds clears at most ``min(k, size)`` buckets, so a call costs O(1)
  amortised whatever the traffic.

An outcome is a two-bit code, ``FAILED | SLOW``, so a call is recorded with one int.
Time is an argument (monotonic seconds), never read here.
"""

from __future__ import annotations

from typing import Protocol

from keel.resilience._state import WindowSnapshot

FAILED = 1
SLOW = 2


class SlidingWindow(Protocol):
    """What the breaker needs from a window; aggregates are read after ``record``."""

    calls: int
    failed: int
    slow: int

    def record(self, code: int, now: float) -> bool:
        """Add one outcome (``FAILED``/``SLOW`` bits) observed at monotonic ``now``.

        Returns False only when the failure and slow-call rates cannot have risen (so
        the breaker may skip its threshold check); True otherwise.
        """
        ...

    def snapshot(self, now: float) -> WindowSnapshot:
        """Aggregates of the window as seen at ``now`` (older data expired first)."""
        ...

    def clear(self) -> None: ...


class CountWindow:
    """The last ``size`` outcomes."""

    __slots__ = ("_buffer", "_next", "_size", "calls", "failed", "slow")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self._size = size
        # -1 marks a slot that never held a call, so the window fills before it slides.
        self._buffer = [-1] * size
        self._next = 0
        self.calls = 0
        self.failed = 0
        self.slow = 0

    def record(self, code: int, now: float) -> bool:
        i = self._next
        buffer = self._buffer
        evicted = buffer[i]
        self._next = i + 1 if i + 1 < self._size else 0
        if evicted == code:
            return code != 0  # steady state: nothing moves, rates cannot have risen
        buffer[i] = code
        if evicted < 0:
            self.calls += 1
        else:
            self.failed -= evicted & FAILED
            self.slow -= evicted >> 1
        self.failed += code & FAILED
        self.slow += code >> 1
        return True

    def snapshot(self, now: float) -> WindowSnapshot:
        return WindowSnapshot(self.calls, self.failed, self.slow)

    def clear(self) -> None:
        self._buffer = [-1] * self._size
        self._next = 0
        self.calls = self.failed = self.slow = 0


class TimeWindow:
    """The outcomes of the last ``size`` whole seconds (the current one included).

    A bucket covers one second of the monotonic clock (``int(now)``). Time that runs
    backwards — which a monotonic clock should never do, but a test clock may — is
    treated as the newest second seen, so no outcome is ever lost or double counted.
    """

    __slots__ = (
        "_bucket_calls",
        "_bucket_failed",
        "_bucket_slow",
        "_head",
        "_size",
        "calls",
        "failed",
        "slow",
    )

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self._size = size
        self._bucket_calls = [0] * size
        self._bucket_failed = [0] * size
        self._bucket_slow = [0] * size
        self._head: int | None = None
        """The newest second that has a bucket; older seconds are kept up to ``size - 1`` back."""
        self.calls = 0
        self.failed = 0
        self.slow = 0

    def _advance(self, second: int) -> int:
        head = self._head
        if head is None:
            self._head = second
            return second
        if second <= head:
            return head
        size = self._size
        if second - head >= size:
            self._reset_buckets()
        else:
            for s in range(head + 1, second + 1):
                i = s % size
                self.calls -= self._bucket_calls[i]
                self.failed -= self._bucket_failed[i]
                self.slow -= self._bucket_slow[i]
                self._bucket_calls[i] = self._bucket_failed[i] = self._bucket_slow[i] = 0
        self._head = second
        return second

    def record(self, code: int, now: float) -> bool:
        second = int(now)
        head = self._head
        i = (second if head is not None and second == head else self._advance(second)) % self._size
        failed = code & FAILED
        slow = code >> 1
        self._bucket_calls[i] += 1
        self._bucket_failed[i] += failed
        self._bucket_slow[i] += slow
        self.calls += 1
        self.failed += failed
        self.slow += slow
        return True  # expiry may have removed successes: always worth a check

    def snapshot(self, now: float) -> WindowSnapshot:
        self._advance(int(now))
        return WindowSnapshot(self.calls, self.failed, self.slow)

    def _reset_buckets(self) -> None:
        size = self._size
        self._bucket_calls = [0] * size
        self._bucket_failed = [0] * size
        self._bucket_slow = [0] * size
        self.calls = self.failed = self.slow = 0

    def clear(self) -> None:
        self._reset_buckets()
        self._head = None

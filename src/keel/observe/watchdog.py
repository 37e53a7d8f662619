"""Event-loop lag, measured from inside the loop — once per process.

A task sleeps a fixed interval and notes how late it woke up. A loop blocked by
synchronous work wakes it late. Two readers share this one measurement:
``/live`` reports the latest reading, so "the process is alive" means "its
event loop still answers in time" without touching any dependency; load
shedding (:mod:`keel.guard.shed`) reads the smoothed value, so one hiccup is
not taken for overload. One sleeper instead of one per reader: fewer wake-ups,
and the probe and the shedder can never disagree about what the loop is doing.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Gauge

from keel.background import BackgroundTask


def loop_lag_gauge(registry: CollectorRegistry | None = None) -> Gauge:
    """``keel_event_loop_lag_seconds`` on ``registry`` (``None``: registered nowhere)."""
    return Gauge("keel_event_loop_lag_seconds", "Event-loop lag, smoothed.", registry=registry)


class LoopWatchdog:
    """``interval``: how often the sleeper wakes; short, so shedding reacts within ~50 ms.
    ``gauge``: where the smoothed lag is exported (the composition root's registry)."""

    def __init__(
        self, interval: float = 0.05, *, smoothing: float = 0.3, gauge: Gauge | None = None
    ) -> None:
        self.interval = interval
        self._gauge = gauge if gauge is not None else loop_lag_gauge()
        self.lag_seconds = 0.0
        self.smoothed_lag_seconds = 0.0
        self._alpha = smoothing
        self._sleeper = BackgroundTask("loop-watchdog", self._run)

    def observe(self, overshoot: float) -> None:
        """One reading: how late the sleeper woke (an early wake-up counts as no lag)."""
        lag = max(0.0, overshoot)
        self.lag_seconds = lag
        smoothed = (1 - self._alpha) * self.smoothed_lag_seconds + self._alpha * lag
        self.smoothed_lag_seconds = smoothed
        self._gauge.set(smoothed)

    def start(self) -> None:
        self._sleeper.start()

    async def stop(self) -> None:
        await self._sleeper.stop()

    @property
    def running(self) -> bool:
        return self._sleeper.running

    async def _run(self) -> None:
        # Physical lag: always the real monotonic clock, never a test's manual clock.
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.observe(time.perf_counter() - before - self.interval)

"""Event-loop lag, measured from inside the loop.

A task sleeps a fixed interval and notes how late it woke up. A loop blocked by
synchronous work wakes it late; ``/live`` reports the lag, so "the process is
alive" means "its event loop still answers in time", without touching any
dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class LoopWatchdog:
    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.lag_seconds = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-watchdog")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lag_seconds = max(0.0, time.perf_counter() - before - self.interval)

"""One time budget for the lifespan's exit steps, so a stuck step cannot hold a stop.

The app leaves its parts in reverse order on an ``AsyncExitStack`` (the SLO
rollups' last flush, the limiter, the audit log, the database last). uvicorn
gives that lifespan shutdown no time limit, so one step that waits — an SQLite
write lock another process holds, a connection that never answers — kept the
whole process from exiting until something killed it, and said nothing about
why. Each step is therefore wrapped: the steps share one budget, counted from
the first step's start; a step still running when it is spent is cancelled,
logged as ``shutdown_step_abandoned`` with its name, and the next step runs.
A step started after the budget is spent still gets ``STEP_FLOOR_SECONDS``, so
closing the database is always at least tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

STEP_FLOOR_SECONDS = 0.5

Stop = Callable[[], Awaitable[object]]


class StopBudget:
    """Bounds the steps it wraps to ``seconds`` in all (loop time)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline: float | None = None

    def bounded(self, step: str, stop: Stop) -> Callable[[], Awaitable[None]]:
        """``stop``, given what is left of the budget; it logs if it is abandoned."""

        async def bounded_stop() -> None:
            loop = asyncio.get_running_loop()
            if self._deadline is None:
                self._deadline = loop.time() + self.seconds
            allowed = max(STEP_FLOOR_SECONDS, self._deadline - loop.time())
            try:
                async with asyncio.timeout(allowed) as scope:
                    await stop()
            except TimeoutError:
                if not scope.expired():
                    raise  # the step's own timeout, not ours: its error to report
                log.error(
                    "shutdown_step_abandoned",
                    step=step,
                    after_seconds=round(allowed, 3),
                    budget_seconds=self.seconds,
                )

        return bounded_stop

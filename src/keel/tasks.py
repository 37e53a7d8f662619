"""In-process background tasks, tracked so shutdown can wait for them.

Exports run here until the job queue takes them over: a task is started after
its request's transaction committed, and on shutdown the process waits for
running tasks (up to a grace period) rather than dropping them mid-write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        async def guarded() -> None:
            try:
                await work()
            except Exception:
                log.exception("background_task_failed", task=name)

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_seconds: float) -> None:
        """Wait for running tasks; cancel what is still running after the grace period."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.warning("background_tasks_cancelled", count=len(pending))

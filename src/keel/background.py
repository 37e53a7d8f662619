"""Background tasks that live as long as the app: started once, cancelled cleanly.

Several parts keep a loop beside the request path (refreshing limit overrides,
judging noisy neighbours, flushing breach batches). Each needs the same three
things: start at most once on the running loop, stop by cancelling and waiting,
and keep going when one round fails on a dependency. That lives here once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from keel.errors import KeelError

log = structlog.get_logger(__name__)


class BackgroundTask:
    """One named task running ``body``; ``start`` is idempotent, ``stop`` waits for it."""

    def __init__(self, name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._body = body
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._body(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


async def every(interval: float, action: Callable[[], Awaitable[object]], failure: str) -> None:
    """Run ``action`` every ``interval`` seconds forever; a dependency failure is logged
    as ``failure`` and the next round tries again (the app keeps serving meanwhile)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await action()
        except KeelError as error:
            log.warning(failure, error=error.detail)

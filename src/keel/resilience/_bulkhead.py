"""Bulkheads: a bounded number of concurrent calls per dependency, with a bounded wait.

A slow dependency otherwise absorbs every worker coroutine and connection the process
has, and the healthy dependencies starve with it. Callers beyond the bound queue for at
most ``max_wait_seconds``, then get :class:`BulkheadFull` (503 + ``Retry-After``) —
shedding load early is kinder than timing out late.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from keel.resilience._config import BulkheadConfig
from keel.resilience._errors import BulkheadFull
from keel.resilience._metrics import BulkheadStats, ResilienceMetrics, default_metrics


class Bulkhead:
    def __init__(
        self,
        name: str,
        config: BulkheadConfig | None = None,
        *,
        metrics: ResilienceMetrics | None = None,
    ) -> None:
        self.name = name
        self.config = config = config if config is not None else BulkheadConfig()
        self._semaphore = asyncio.Semaphore(config.max_concurrent_calls)
        self._in_use = 0
        self._rejected = 0
        (metrics if metrics is not None else default_metrics()).watch_bulkhead(self)

    @property
    def in_use(self) -> int:
        return self._in_use

    def stats(self) -> BulkheadStats:
        return BulkheadStats(
            self.name, self._in_use, self.config.max_concurrent_calls, self._rejected
        )

    async def acquire(self) -> None:
        """Take a slot, waiting at most ``max_wait_seconds``; :class:`BulkheadFull` if none."""
        semaphore = self._semaphore
        if not semaphore.locked():
            await semaphore.acquire()  # a free slot is taken without suspending
        elif self.config.max_wait_seconds == 0:
            raise self._rejection()
        else:
            try:
                async with asyncio.timeout(self.config.max_wait_seconds):
                    await semaphore.acquire()
            except TimeoutError:
                raise self._rejection() from None
        self._in_use += 1

    def release(self) -> None:
        self._in_use -= 1
        self._semaphore.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def _rejection(self) -> BulkheadFull:
        self._rejected += 1
        return BulkheadFull(
            f"{self.name}: all {self.config.max_concurrent_calls} slots in use",
            retry_after=self.config.retry_after,
            dependency=self.name,
        )

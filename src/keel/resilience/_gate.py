"""A circuit breaker behind a synchronous gate: ``allow()``, ``record_success()``,
``record_failure()``.

Some callers own their fallback and only need to ask "may I call?" and say how it went —
the rate limiter's ``FallbackBackend`` decides locally while Redis is out. This adapter
gives them the full :class:`CircuitBreaker` (rates over a window, half-open probes,
operator states, state shared between processes) through that narrow protocol.

The permit taken by ``allow()`` and the call's start time are kept in a context
variable, so concurrent requests (each its own task and context) never mix up whose
outcome is whose, and a stale outcome never lands in a newer state's window. The
breaker's awaitable work (delivering transitions to listeners and the store, reading
the shared state) cannot run inside these synchronous methods: it is started as a
background task, bounded by the store's own timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any

from keel.resilience._breaker import CircuitBreaker
from keel.resilience._errors import BreakerOpen

# (gate, permit, start): one slot per task is enough, since a task awaits one call at
# a time through a gate; the gate's identity guards against a permit of another gate.
_permit: ContextVar[tuple[BreakerGate, int, float] | None] = ContextVar(
    "keel_breaker_gate_permit", default=None
)


class BreakerGate:
    """``allow`` / ``record_success`` / ``record_failure`` over a :class:`CircuitBreaker`."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self._tasks: set[asyncio.Task[None]] = set()

    def allow(self) -> bool:
        breaker = self.breaker
        if breaker.sync_due:
            self._background(breaker.sync())
        try:
            token = breaker.acquire_permission()
        except BreakerOpen:
            self._flush_soon()  # an OPEN → HALF_OPEN change may be waiting
            return False
        _permit.set((self, token, breaker.clock_monotonic()))
        self._flush_soon()
        return True

    def record_success(self) -> None:
        token, duration = self._take()
        self.breaker.on_success(token, duration)
        self._flush_soon()

    def record_failure(self) -> None:
        token, duration = self._take()
        self.breaker.on_failure(token, duration)
        self._flush_soon()

    def _take(self) -> tuple[int, float]:
        held = _permit.get()
        now = self.breaker.clock_monotonic()
        if held is None or held[0] is not self:
            # An outcome without a permit (a lease release failing): it still tells of
            # the dependency, in whatever state the breaker is in now.
            return self.breaker.epoch, 0.0
        _permit.set(None)
        return held[1], max(0.0, now - held[2])

    def _flush_soon(self) -> None:
        if self.breaker.has_pending:
            self._background(self.breaker.flush())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no loop (a synchronous test): the next call delivers it
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Wait for background deliveries (each bounded by the store's timeout)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["BreakerGate"]

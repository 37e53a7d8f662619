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

A half-open probe whose caller never reports back (its task was cancelled, or it raised
something the caller does not classify) would hold its permit for ever, and with every
permit held the breaker would stay HALF_OPEN, rejecting everything. The gate remembers
its outstanding probes and takes back any older than ``stale_after`` seconds — far
beyond the caller's own timeout — before saying no.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any

from keel.resilience._breaker import CircuitBreaker
from keel.resilience._errors import BreakerOpen, retry_after_seconds
from keel.resilience._state import BreakerState

_HALF_OPEN = BreakerState.HALF_OPEN

# (gate, permit, start): one slot per task is enough, since a task awaits one call at
# a time through a gate; the gate's identity guards against a permit of another gate.
_permit: ContextVar[tuple[BreakerGate, int, float, int] | None] = ContextVar(
    "keel_breaker_gate_permit", default=None
)


class BreakerGate:
    """``allow`` / ``record_success`` / ``record_failure`` over a :class:`CircuitBreaker`."""

    def __init__(self, breaker: CircuitBreaker, *, stale_after: float = 30.0) -> None:
        self.breaker = breaker
        self.stale_after = stale_after
        self._tasks: set[asyncio.Task[None]] = set()
        self._probes: dict[int, tuple[int, float]] = {}  # probe id -> (permit, start)
        self._next_probe = 0
        self._mono = breaker.clock_monotonic

    # The gate sits on the rate limiter's path, twice per Redis decision: the methods
    # below read the breaker's state through its cheapest accessors and inline the rest.

    def allow(self) -> bool:
        breaker = self.breaker
        if breaker.sync_due:
            self._background(breaker.sync())
        try:
            token = breaker.acquire_permission()
        except BreakerOpen:
            if not self._reclaim_stale_probes():
                self._flush_soon()  # an OPEN → HALF_OPEN change may be waiting
                return False
            try:
                token = breaker.acquire_permission()
            except BreakerOpen:
                return False
        start = self._mono()
        probe = 0
        if breaker.state is _HALF_OPEN:
            self._next_probe = probe = self._next_probe + 1
            self._probes[probe] = (token, start)
        _permit.set((self, token, start, probe))
        if breaker.has_pending:
            self._background(breaker.flush())
        return True

    def record_success(self) -> None:
        breaker = self.breaker
        held = _permit.get()
        if held is not None and held[0] is self:
            _permit.set(None)
            if held[3]:
                self._probes.pop(held[3], None)
            now = self._mono()
            breaker.on_success(held[1], now - held[2], now)
        else:
            breaker.on_success(breaker.epoch, 0.0)  # see record_failure
        if breaker.has_pending:
            self._background(breaker.flush())

    def record_failure(self) -> None:
        breaker = self.breaker
        held = _permit.get()
        if held is not None and held[0] is self:
            _permit.set(None)
            if held[3]:
                self._probes.pop(held[3], None)
            now = self._mono()
            breaker.on_failure(held[1], now - held[2], now)
        else:
            # An outcome without a permit (a lease release failing): it still tells of
            # the dependency, in whatever state the breaker is in now.
            breaker.on_failure(breaker.epoch, 0.0)
        if breaker.has_pending:
            self._background(breaker.flush())

    def record_ignored(self) -> None:
        """The call ended without a verdict (cancelled, refused elsewhere): a probe
        permit it held goes back, so HALF_OPEN never waits on it."""
        held = _permit.get()
        if held is None or held[0] is not self:
            return
        _permit.set(None)
        if held[3]:
            self._probes.pop(held[3], None)
        self.breaker.release_permission(held[1])

    def retry_after(self) -> int:
        """The ``Retry-After`` for a call ``allow`` refused: whole seconds, at least 1."""
        return retry_after_seconds(self.breaker.retry_in())

    def _reclaim_stale_probes(self) -> bool:
        """Give back probe permits nobody reported on within ``stale_after``."""
        if not self._probes:
            return False
        cutoff = self._mono() - self.stale_after
        stale = [probe for probe, (_, start) in self._probes.items() if start <= cutoff]
        for probe in stale:
            token, _ = self._probes.pop(probe)
            self.breaker.release_permission(token)
        return bool(stale)

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

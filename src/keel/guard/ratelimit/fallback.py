"""Keep limiting when Redis is down: decide locally with a share of each limit.

Redis is an optional dependency (DESIGN.md, failure posture): when it errors
or times out, :class:`FallbackBackend` answers from a local
:class:`~keel.guard.ratelimit.memory.MemoryBackend` with every limit divided by
the number of instances, so the fleet as a whole stays near the intended
limit instead of failing open (no limit) or closed (an outage becomes a 503).

A breaker keeps it from hammering a dead Redis: after a failure, calls go
straight to the local backend for ``cooldown`` seconds, then one call probes
Redis again. :class:`Cooldown` is the minimal built-in breaker; any object
with ``allow()``, ``record_success()`` and ``record_failure()`` (the full
breaker in ``keel.resilience``) can be passed instead.

The switch is visible three ways: ``degraded`` (for ``/ready`` to say
``warn``), the ``keel_ratelimit_fallback_decisions_total`` counter, and one
structlog event per transition (``ratelimit.fallback.engaged`` /
``ratelimit.fallback.recovered``) — never one per request.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter

from keel.clock import SYSTEM_CLOCK, Clock
from keel.guard.ratelimit.backend import (
    Admission,
    LimiterBackend,
    QuotaCheck,
    RateCheck,
    SlotClaim,
    SlotDecision,
)
from keel.guard.ratelimit.errors import LimiterUnavailable
from keel.guard.ratelimit.gcra import GcraDecision, Rate
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.quota import QuotaDecision, QuotaWindow

_log = structlog.get_logger("keel.guard.ratelimit")

T = TypeVar("T")

LOCAL_SLOT_PREFIX = "local:"
"""Slot ids handed out by the local backend, so release goes back to it."""


class Breaker(Protocol):
    """What the fallback needs from a circuit breaker."""

    def allow(self) -> bool:
        """May the next call go to the protected dependency?"""
        ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...


class CooldownState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"


class Cooldown:
    """The minimal breaker: one failure opens it for ``seconds``, then a probe.

    CLOSED --failure--> OPEN; OPEN lets one probe through once ``seconds`` have
    passed on the monotonic clock; the probe's success closes it, its failure
    re-opens it for another ``seconds``.
    """

    def __init__(self, seconds: float = 5.0, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.seconds = seconds
        self._clock = clock
        self.state = CooldownState.CLOSED
        self._opened_at = 0.0

    def allow(self) -> bool:
        if self.state is CooldownState.CLOSED:
            return True
        if self._clock.monotonic() - self._opened_at >= self.seconds:
            # Probe; push the next probe out so concurrent calls do not all probe.
            self._opened_at = self._clock.monotonic()
            return True
        return False

    def record_success(self) -> None:
        self.state = CooldownState.CLOSED

    def record_failure(self) -> None:
        self.state = CooldownState.OPEN
        self._opened_at = self._clock.monotonic()


class FallbackMetrics:
    """The fallback's Prometheus counter on ``registry`` (``None``: registered nowhere)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.decisions = Counter(
            "keel_ratelimit_fallback_decisions",
            "Limiter decisions made locally because the shared store was unavailable.",
            ["operation"],
            registry=registry,
        )


class FallbackBackend:
    """A :class:`~keel.guard.ratelimit.backend.LimiterBackend` that survives its primary.

    ``instances`` is how many Keel processes share the limits; each local
    decision uses ``1/instances`` of every limit (at least 1). Quota counts
    and rate state kept locally during an outage are not merged back into
    Redis when it returns: a short outage costs at most one local share of
    each limit, which is the price of staying up.
    """

    def __init__(
        self,
        primary: LimiterBackend,
        *,
        instances: int = 1,
        local: MemoryBackend | None = None,
        breaker: Breaker | None = None,
        cooldown: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        metrics: FallbackMetrics | None = None,
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be at least 1")
        self.primary = primary
        self.local = local or MemoryBackend()
        self.instances = instances
        self.breaker: Breaker = breaker or Cooldown(cooldown, clock=clock)
        self._clock = clock
        self._metrics = metrics if metrics is not None else FallbackMetrics()
        self._degraded_since: float | None = None

    @property
    def degraded(self) -> bool:
        """True while decisions are being made locally (``/ready`` reports ``warn``)."""
        return self._degraded_since is not None

    async def _route(
        self,
        operation: str,
        remote: Callable[[], Awaitable[T]],
        local: Callable[[], Awaitable[T]],
    ) -> T:
        if self.breaker.allow():
            try:
                result = await remote()
            except LimiterUnavailable as exc:
                self.breaker.record_failure()
                self._engage(operation, exc.detail)
            else:
                self.breaker.record_success()
                self._recover()
                return result
        else:
            # Another Redis user (the breaker state store, say) may have opened the
            # shared breaker first: deciding locally is degraded all the same.
            self._engage(operation, "the Redis circuit breaker is open")
        self._metrics.decisions.labels(operation=operation).inc()
        return await local()

    def _engage(self, operation: str, reason: str) -> None:
        if self._degraded_since is None:
            self._degraded_since = self._clock.monotonic()
            _log.warning(
                "ratelimit.fallback.engaged",
                operation=operation,
                error=reason,
                instances=self.instances,
            )

    def _recover(self) -> None:
        if self._degraded_since is not None:
            degraded_for = self._clock.monotonic() - self._degraded_since
            self._degraded_since = None
            _log.info("ratelimit.fallback.recovered", degraded_seconds=round(degraded_for, 3))

    def _share(self, limit: int) -> int:
        return max(1, math.floor(limit / self.instances))

    # --- LimiterBackend ------------------------------------------------------

    async def admit(
        self,
        rates: Sequence[tuple[str, Rate]],
        quotas: Sequence[tuple[str, int, QuotaWindow]],
        slots: Sequence[tuple[str, int, float]],
        now: float,
        n: int = 1,
    ) -> Admission:
        async def local() -> Admission:
            # The whole request is decided in one place: all on Redis or all
            # locally, never split, so all-or-nothing holds either way.
            share = self.instances
            admission = await self.local.admit(
                [RateCheck(key, rate.scaled(share)) for key, rate in rates],
                [QuotaCheck(key, self._share(limit), window) for key, limit, window in quotas],
                [SlotClaim(key, self._share(limit), lease) for key, limit, lease in slots],
                now,
                n,
            )
            if not admission.allowed:
                return admission
            # Tag the ids so their release goes back to the local backend.
            tagged = tuple(
                SlotDecision(True, LOCAL_SLOT_PREFIX + str(d.slot_id), d.in_flight, d.limit, 0.0)
                for d in admission.slots
            )
            return admission._replace(slots=tagged)

        return await self._route(
            "admit", lambda: self.primary.admit(rates, quotas, slots, now, n), local
        )

    async def gcra(self, key: str, rate: Rate, now: float, n: int = 1) -> GcraDecision:
        return await self._route(
            "gcra",
            lambda: self.primary.gcra(key, rate, now, n),
            lambda: self.local.gcra(key, rate.scaled(self.instances), now, n),
        )

    async def quota_check(
        self, key: str, limit: int, window: QuotaWindow, now: float, n: int = 1
    ) -> QuotaDecision:
        return await self._route(
            "quota_check",
            lambda: self.primary.quota_check(key, limit, window, now, n),
            lambda: self.local.quota_check(key, self._share(limit), window, now, n),
        )

    async def quota_consume(
        self,
        key: str,
        limit: int,
        window: QuotaWindow,
        now: float,
        n: int = 1,
        *,
        overdraft: bool = False,
    ) -> QuotaDecision:
        return await self._route(
            "quota_consume",
            lambda: self.primary.quota_consume(key, limit, window, now, n, overdraft=overdraft),
            lambda: self.local.quota_consume(
                key, self._share(limit), window, now, n, overdraft=overdraft
            ),
        )

    async def quota_refund(
        self, key: str, window: QuotaWindow, consumed_at: float, n: int = 1
    ) -> None:
        # A refund cannot know where its consume was counted; it goes where a
        # consume would go now, and the floor at zero keeps a misrouted one harmless.
        await self._route(
            "quota_refund",
            lambda: self.primary.quota_refund(key, window, consumed_at, n),
            lambda: self.local.quota_refund(key, window, consumed_at, n),
        )

    async def slot_acquire(self, key: str, limit: int, lease: float, now: float) -> SlotDecision:
        async def local() -> SlotDecision:
            decision = await self.local.slot_acquire(key, self._share(limit), lease, now)
            if decision.slot_id is None:
                return decision
            # Tag the id so its release goes back to the local backend.
            local_id = LOCAL_SLOT_PREFIX + decision.slot_id
            return SlotDecision(True, local_id, decision.in_flight, limit, 0.0)

        return await self._route(
            "slot_acquire", lambda: self.primary.slot_acquire(key, limit, lease, now), local
        )

    async def slot_release(self, key: str, slot_id: str) -> None:
        if slot_id.startswith(LOCAL_SLOT_PREFIX):
            await self.local.slot_release(key, slot_id.removeprefix(LOCAL_SLOT_PREFIX))
            return
        try:
            await self.primary.slot_release(key, slot_id)
        except LimiterUnavailable:
            # The lease expires on its own: exactly what leases are for.
            self.breaker.record_failure()

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.local.aclose()

"""Builds the limits subsystem from settings (called by ``create_app``)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from keel.audit import Auditor
from keel.clock import Clock
from keel.db.engine import Database
from keel.guard.breaches import BreachMetrics, BreachRecorder
from keel.guard.limits import ConcurrencyLimits, LimitGuard, LimitMetrics, ThresholdHook
from keel.guard.noisy import NoisyNeighbourDetector
from keel.guard.noisy_watch import NoisyMetrics, NoisyWatch
from keel.guard.overrides import OverrideCache
from keel.guard.ratelimit import (
    Breaker,
    FallbackBackend,
    FallbackMetrics,
    LimiterBackend,
    MemoryBackend,
    RateLimiter,
    RedisBackend,
    policy_from,
)
from keel.guard.shed import LoadShedder, ShedMetrics, ShedThresholds
from keel.guard.storage_quota import StorageQuota
from keel.observe.identity import identity_key
from keel.observe.watchdog import LoopWatchdog
from keel.settings import Settings


@dataclass(frozen=True)
class GuardMetrics:
    """The metrics of every part of the limits subsystem."""

    shed: ShedMetrics
    limits: LimitMetrics
    breaches: BreachMetrics
    noisy: NoisyMetrics
    fallback: FallbackMetrics

    @classmethod
    def on(cls, registry: CollectorRegistry | None) -> GuardMetrics:
        """All of them on ``registry`` (``None``: registered nowhere)."""
        return cls(
            shed=ShedMetrics(registry),
            limits=LimitMetrics(registry),
            breaches=BreachMetrics(registry),
            noisy=NoisyMetrics(registry),
            fallback=FallbackMetrics(registry),
        )


@dataclass
class LimitsParts:
    guard: LimitGuard
    shedder: LoadShedder
    storage_quota: StorageQuota
    watch: NoisyWatch

    async def start(self) -> None:
        await self.guard.overrides.start()
        self.guard.breaches.start()
        self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()
        await self.guard.breaches.stop()
        await self.guard.overrides.stop()
        await self.guard.limiter.backend.aclose()

    @property
    def degraded(self) -> bool:
        backend = self.guard.limiter.backend
        return isinstance(backend, FallbackBackend) and backend.degraded


def limiter_backend(
    settings: Settings,
    clock: Clock,
    breaker: Breaker | None = None,
    metrics: FallbackMetrics | None = None,
) -> LimiterBackend:
    """Redis behind a local fallback when configured; ``breaker`` decides when to skip
    Redis (the ``redis`` dependency's breaker, through a ``BreakerGate``)."""
    if settings.redis_url is None:
        return MemoryBackend()
    return FallbackBackend(
        RedisBackend.from_url(settings.redis_url, timeout=settings.limiter_redis_timeout_seconds),
        instances=settings.limiter_instances,
        breaker=breaker,
        clock=clock,
        metrics=metrics,
    )


def build_limits(
    settings: Settings,
    database: Database,
    clock: Clock,
    watchdog: LoopWatchdog,
    *,
    redis_breaker: Breaker | None = None,
    audit: Auditor | None = None,
    threshold_hooks: tuple[ThresholdHook, ...] = (),
    metrics: GuardMetrics | None = None,
) -> LimitsParts:
    """``watchdog``: the process's one loop-lag measurement (started by ``observe.running``);
    ``audit``: where breaches are recorded too; ``threshold_hooks``: told of each quota
    warning threshold a request crosses; ``metrics``: where every part counts (by
    default registered nowhere)."""
    metrics = metrics if metrics is not None else GuardMetrics.on(None)
    policy = policy_from(settings.ratelimit_policy)
    overrides = OverrideCache(database, policy)
    shedder = LoadShedder(
        ShedThresholds(settings.shed_max_in_flight, settings.shed_max_loop_lag_seconds),
        watchdog,
        metrics.shed,
    )
    noisy = NoisyNeighbourDetector()
    guard = LimitGuard(
        limiter=RateLimiter(limiter_backend(settings, clock, redis_breaker, metrics.fallback)),
        policy=policy,
        overrides=overrides,
        breaches=BreachRecorder(
            database,
            identity_key(settings.secret_key.get_secret_value().encode()),
            audit=audit,
            metrics=metrics.breaches,
        ),
        noisy=noisy,
        shedder=shedder,
        concurrency=ConcurrencyLimits(settings.concurrency_per_user, settings.concurrency_per_org),
        clock=clock,
        threshold_hooks=threshold_hooks,
        metrics=metrics.limits,
    )
    return LimitsParts(
        guard=guard,
        shedder=shedder,
        storage_quota=StorageQuota(settings.storage_quota_bytes, overrides),
        watch=NoisyWatch(noisy, database, clock=clock, metrics=metrics.noisy),
    )

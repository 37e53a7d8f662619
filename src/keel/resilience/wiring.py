"""Keel's dependencies, configured from settings (called by ``create_app``).

Three external dependencies go through the resilience layer, each with its own
timeout, bulkhead, breaker and retry budget, all sharing one breaker state store:

* ``storage`` — the blob store. Its breaker counts only storage's own failures
  (``StorageUnavailable``, ``OSError``) and timeouts: a missing blob (``NotFound``) or a
  refused namespace is the caller's business, never the disk's fault.
* ``redis`` — the rate limiter's shared store. Limits fall back to local decisions while
  its breaker is open (``guard/ratelimit/fallback.py``), so it waits a short time in OPEN
  and never retries (a GCRA update is not idempotent, and a limit decided locally is
  cheaper than a late one).
* ``webhooks`` — outbound notifications. Not one dependency but a
  :class:`DependencyPool` of them, one per webhook host, made from one template
  (:func:`webhook_template`): one tenant's dead endpoint opens its own host's breaker
  only. Breakers are named ``webhooks.<host>``; the pool keeps at most
  ``KEEL_WEBHOOKS_MAX_HOSTS`` of them and forgets hosts idle for
  ``KEEL_WEBHOOKS_IDLE_SECONDS``. Retries inside a delivery are allowed because every
  POST carries ``Idempotency-Key: <job id>``; they are short, since the job's own backoff
  is the long-term retry.

And one breaker guards Keel's own database:

* ``database`` — not a :class:`Dependency` (the engine has its own pool and timeouts) but
  a breaker that :class:`~keel.db.engine.Database` consults and feeds for every session
  (:func:`build_database_breaker`): it counts a failure for each error that means the
  database cannot serve (:func:`keel.db.failures.is_unavailable`) and, once open, answers
  ``503 database-unavailable`` at once, probing again after its (growing) wait.

The breaker state store is ``KEEL_BREAKER_STORE_URL``, else ``KEEL_REDIS_URL``, else
``memory://`` (one process). With Redis, one process's trip protects the others and
``keel breakers force-open NAME`` reaches every server.
"""

from __future__ import annotations

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import StorageUnavailable
from keel.guard.ratelimit.errors import LimiterUnavailable
from keel.resilience._breaker import CircuitBreaker
from keel.resilience._config import BreakerConfig, BulkheadConfig, DependencyConfig, RetryConfig
from keel.resilience._dependency import Dependencies
from keel.resilience._metrics import ResilienceMetrics
from keel.resilience._pool import DependencyPool
from keel.resilience._registry import BreakerRegistry
from keel.resilience._store import BreakerStateStore, store_from_url
from keel.settings import Settings

STORAGE = "storage"
REDIS = "redis"
WEBHOOKS = "webhooks"
DATABASE = "database"


def breaker_store_url(settings: Settings) -> str:
    """Where breakers share state: the explicit setting, else Redis, else this process."""
    if settings.breaker_store_url:
        return settings.breaker_store_url
    return settings.redis_url or "memory://"


def breaker_store(settings: Settings) -> BreakerStateStore:
    return store_from_url(breaker_store_url(settings), prefix="keel")


def _breaker(settings: Settings, **overrides: object) -> BreakerConfig:
    values: dict[str, object] = {
        "failure_rate_threshold": settings.breaker_failure_rate_threshold,
        "slow_call_rate_threshold": settings.breaker_slow_call_rate_threshold,
        "window_size": settings.breaker_window_size,
        "minimum_number_of_calls": settings.breaker_minimum_calls,
        "wait_duration_in_open_state": settings.breaker_wait_seconds,
        "max_wait_duration_in_open_state": settings.breaker_max_wait_seconds,
        "wait_duration_multiplier": settings.breaker_wait_multiplier,
        "permitted_number_of_calls_in_half_open_state": settings.breaker_half_open_calls,
        "sync_interval": settings.breaker_sync_seconds,
    }
    values.update(overrides)
    return BreakerConfig.model_validate(values)


def dependency_configs(settings: Settings) -> list[DependencyConfig]:
    """One :class:`DependencyConfig` per external dependency, from settings."""
    storage = DependencyConfig(
        name=STORAGE,
        timeout_seconds=settings.storage_timeout_seconds,
        failure_retry_after=2,
        breaker=_breaker(
            settings,
            slow_call_duration_threshold=min(
                settings.storage_slow_call_seconds, settings.storage_timeout_seconds
            ),
            record_exceptions=(StorageUnavailable, OSError),
        ),
        retry=RetryConfig(
            max_attempts=settings.storage_retry_attempts,
            max_total_seconds=max(1.0, settings.storage_timeout_seconds),
            initial_backoff=0.05,
            max_backoff=1.0,
            budget_ratio=settings.retry_budget_ratio,
        ),
        bulkhead=BulkheadConfig(
            max_concurrent_calls=settings.storage_max_concurrent_calls,
            max_wait_seconds=1.0,
            retry_after=1,
        ),
    )
    redis = DependencyConfig(
        name=REDIS,
        timeout_seconds=settings.limiter_redis_timeout_seconds,
        breaker=_breaker(
            settings,
            slow_call_duration_threshold=settings.limiter_redis_timeout_seconds,
            wait_duration_in_open_state=settings.redis_breaker_wait_seconds,
            record_exceptions=(LimiterUnavailable, OSError, TimeoutError),
        ),
        retry=RetryConfig(max_attempts=1, budget_ratio=settings.retry_budget_ratio),
        # The limiter is on every request's path: never queue behind a slow Redis.
        bulkhead=BulkheadConfig(max_concurrent_calls=512, max_wait_seconds=0.0),
    )
    return [storage, redis]


def database_breaker_config(settings: Settings) -> BreakerConfig:
    """The ``database`` breaker: the shared policy, counting only unavailability.

    :class:`~keel.db.engine.Database` reports each guarded block itself (through a
    :class:`~keel.resilience.BreakerGate`): a failure when the database could not
    serve (:func:`keel.db.failures.is_unavailable`), a success when it answered, even
    with a constraint violation. Slowness is not its business — statements are bounded
    by the driver's command timeout and connections by the pool timeout, and a block
    that is slow because an export is long is no outage — so the slow-call threshold is
    out of reach.
    """
    return _breaker(settings, slow_call_duration_threshold=_NEVER_SLOW)


_NEVER_SLOW = 24 * 3600.0


def build_database_breaker(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    store: BreakerStateStore | None = None,
    metrics: ResilienceMetrics | None = None,
) -> CircuitBreaker:
    """The ``database`` breaker, built before the database it guards; it joins the breaker
    registry (its listeners, the CLI's levers) as a member when that is built."""
    return CircuitBreaker(
        DATABASE, database_breaker_config(settings), clock=clock, store=store, metrics=metrics
    )


def webhook_template(settings: Settings) -> DependencyConfig:
    """The configuration every webhook host's dependency is made from.

    In-call retries stop starting after ``KEEL_WEBHOOKS_TIMEOUT_SECONDS`` (so a delivery
    lasts at most about two timeouts, well inside the job's own 60 s timeout) and honour
    a ``Retry-After`` of up to 10 s; a longer one ends them, and the job is retried later
    by its own backoff, which honours the hint too. The bulkhead never waits: a host
    already busy with ``KEEL_WEBHOOKS_MAX_CONCURRENT_CALLS`` deliveries gets the next one
    rescheduled, not queued inside a worker slot.
    """
    return DependencyConfig(
        name=WEBHOOKS,
        timeout_seconds=settings.webhooks_timeout_seconds,
        failure_retry_after=30,
        breaker=_breaker(
            settings,
            slow_call_duration_threshold=min(5.0, settings.webhooks_timeout_seconds),
            wait_duration_in_open_state=settings.webhooks_breaker_wait_seconds,
        ),
        retry=RetryConfig(
            max_attempts=settings.webhooks_retry_attempts,
            max_total_seconds=settings.webhooks_timeout_seconds,
            initial_backoff=0.5,
            max_backoff=5.0,
            max_retry_after=10.0,
            budget_ratio=settings.retry_budget_ratio,
        ),
        bulkhead=BulkheadConfig(
            max_concurrent_calls=settings.webhooks_max_concurrent_calls, max_wait_seconds=0.0
        ),
    )


def build_webhooks(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    registry: BreakerRegistry | None = None,
    metrics: ResilienceMetrics | None = None,
) -> DependencyPool:
    """The per-host webhook pool; its breakers join ``registry`` (and share its store)."""
    return DependencyPool(
        webhook_template(settings),
        max_members=settings.webhooks_max_hosts,
        idle_seconds=settings.webhooks_idle_seconds,
        clock=clock,
        store=registry.store if registry is not None else None,
        metrics=metrics,
        registry=registry,
    )


def build_dependencies(
    settings: Settings,
    registry: BreakerRegistry,
    *,
    clock: Clock = SYSTEM_CLOCK,
    metrics: ResilienceMetrics | None = None,
) -> Dependencies:
    """The app's :class:`Dependencies`; their breakers join ``registry`` (its store and
    listeners)."""
    return Dependencies(
        dependency_configs(settings),
        clock=clock,
        store=registry.store,
        metrics=metrics,
        registry=registry,
    )

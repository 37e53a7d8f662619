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
* ``webhooks`` — outbound notifications, wrapped at their call site by the job queue.

The breaker state store is ``KEEL_BREAKER_STORE_URL``, else ``KEEL_REDIS_URL``, else
``memory://`` (one process). With Redis, one process's trip protects the others and
``keel breakers force-open NAME`` reaches every server.
"""

from __future__ import annotations

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import StorageUnavailable
from keel.guard.ratelimit.errors import LimiterUnavailable
from keel.resilience._breaker import BreakerListener
from keel.resilience._config import BreakerConfig, BulkheadConfig, DependencyConfig, RetryConfig
from keel.resilience._dependency import Dependencies
from keel.resilience._store import BreakerStateStore, store_from_url
from keel.settings import Settings

STORAGE = "storage"
REDIS = "redis"
WEBHOOKS = "webhooks"


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
    webhooks = DependencyConfig(
        name=WEBHOOKS,
        timeout_seconds=settings.webhooks_timeout_seconds,
        failure_retry_after=30,
        breaker=_breaker(
            settings,
            slow_call_duration_threshold=min(5.0, settings.webhooks_timeout_seconds),
        ),
        retry=RetryConfig(
            max_attempts=settings.webhooks_retry_attempts,
            max_total_seconds=max(60.0, settings.webhooks_timeout_seconds),
            initial_backoff=0.5,
            max_backoff=30.0,
            max_retry_after=300.0,
            budget_ratio=settings.retry_budget_ratio,
        ),
        bulkhead=BulkheadConfig(
            max_concurrent_calls=settings.webhooks_max_concurrent_calls, max_wait_seconds=0.0
        ),
    )
    return [storage, redis, webhooks]


def build_dependencies(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    store: BreakerStateStore | None = None,
    listeners: tuple[BreakerListener, ...] = (),
) -> Dependencies:
    """The app's :class:`Dependencies`; ``store`` defaults to :func:`breaker_store`."""
    return Dependencies(
        dependency_configs(settings),
        clock=clock,
        store=store if store is not None else breaker_store(settings),
        listeners=listeners,
    )

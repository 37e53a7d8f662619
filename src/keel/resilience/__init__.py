"""Keel's resilience layer: timeouts, bulkheads, circuit breakers, retries and fallbacks.

Every call to an external dependency (storage, Redis, webhooks) goes through one
:class:`Dependency`, which nests ``fallback(retry(breaker(bulkhead(timeout(fn)))))``
(see ``_dependency.py`` for why that way round). A :class:`DependencyPool` holds many
dependencies of one kind (a webhook per host) made from one template. Breakers share
their state between processes through a :class:`BreakerStateStore`, so an operator (or
one process) opening a breaker is obeyed by all of them.

    deps = Dependencies([DependencyConfig(name="storage")], store=store_from_url(url))
    blob = await deps.storage.call(storage.get, key, idempotent=True)
"""

from keel.resilience._breaker import BreakerListener, CircuitBreaker
from keel.resilience._bulkhead import Bulkhead
from keel.resilience._config import (
    BreakerConfig,
    BulkheadConfig,
    DependencyConfig,
    RetryConfig,
    WindowType,
)
from keel.resilience._dependency import Dependencies, Dependency, Fallback
from keel.resilience._errors import (
    BreakerOpen,
    BulkheadFull,
    DependencyFailed,
    DependencyTimeout,
    StateStoreUnavailable,
)
from keel.resilience._gate import BreakerGate
from keel.resilience._metrics import (
    BreakerStats,
    BulkheadStats,
    ResilienceMetrics,
    default_metrics,
)
from keel.resilience._pool import DependencyPool, member_name
from keel.resilience._registry import (
    BreakerRegistry,
    BreakerStatus,
    disable_breaker,
    force_closed_breaker,
    force_open_breaker,
    list_breakers,
    metrics_only_breaker,
    reset_breaker,
)
from keel.resilience._retry import (
    RetryAfterHint,
    RetryBudget,
    RetryPolicy,
    is_testing,
    retry_after_hint,
    set_testing,
)
from keel.resilience._state import (
    BreakerState,
    BreakerTransition,
    IllegalTransition,
    Transition,
    TransitionReason,
    WindowSnapshot,
)
from keel.resilience._store import (
    BreakerRecord,
    BreakerStateStore,
    MemoryBreakerStateStore,
    RedisBreakerStateStore,
    store_from_url,
)
from keel.resilience._window import CountWindow, SlidingWindow, TimeWindow

__all__ = [
    "BreakerConfig",
    "BreakerGate",
    "BreakerListener",
    "BreakerOpen",
    "BreakerRecord",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStateStore",
    "BreakerStats",
    "BreakerStatus",
    "BreakerTransition",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadFull",
    "BulkheadStats",
    "CircuitBreaker",
    "CountWindow",
    "Dependencies",
    "Dependency",
    "DependencyConfig",
    "DependencyFailed",
    "DependencyPool",
    "DependencyTimeout",
    "Fallback",
    "IllegalTransition",
    "MemoryBreakerStateStore",
    "RedisBreakerStateStore",
    "ResilienceMetrics",
    "RetryAfterHint",
    "RetryBudget",
    "RetryConfig",
    "RetryPolicy",
    "SlidingWindow",
    "StateStoreUnavailable",
    "TimeWindow",
    "Transition",
    "TransitionReason",
    "WindowSnapshot",
    "WindowType",
    "default_metrics",
    "disable_breaker",
    "force_closed_breaker",
    "force_open_breaker",
    "is_testing",
    "list_breakers",
    "member_name",
    "metrics_only_breaker",
    "reset_breaker",
    "retry_after_hint",
    "set_testing",
    "store_from_url",
]

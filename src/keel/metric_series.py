"""Every documented metric family of the API, on one registry, with series from the
first scrape.

:class:`AppMetrics` is every part's metrics object, built on the app's own
registry before any part (:func:`build_metrics`) and handed to each part by the
composition root; nothing is registered at import.

prometheus_client exposes a labelled metric only once a child exists, and in
multiprocess mode (``keel serve --workers N``) a family without a child is not
exposed at all. A deploy orchestrator judging a canary by ``/metrics`` must find
every documented family on a fresh instance, at zero, rather than a family that
appears only after its first event (an absent series is "no data", not "0").
So the label sets Keel knows in advance — the limits of the policy, the
idempotent operations, the job types, the shedding priorities — are touched at
start; label values that depend on traffic (routes, statuses, webhook hosts)
still appear when first seen.

It also puts on ``/metrics`` what is read at scrape time: queue depth from the
database (the API runs no worker on PostgreSQL) and, in multiprocess mode, the
breakers and bulkheads of the answering process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from keel import __version__
from keel.clock import Clock
from keel.db.engine import Database
from keel.guard.idempotency.metrics import IdempotencyMetrics
from keel.guard.ratelimit.headers import WARNING_THRESHOLDS
from keel.guard.ratelimit.policy import Policy, QuotaRule
from keel.guard.shed import Priority
from keel.guard.wiring import GuardMetrics
from keel.jobs.catalog import build_registry
from keel.jobs.metrics import JobMetrics, QueueDepthCollector
from keel.jobs.queue import connector_for
from keel.jobs.runtime import DEFAULT_CONCURRENCY
from keel.jobs.worker import parse_queues
from keel.observe.log_writer import dropped_lines_counter
from keel.observe.metrics import Metrics, open_registry
from keel.observe.watchdog import loop_lag_gauge
from keel.resilience import ResilienceMetrics
from keel.resilience.wiring import WEBHOOKS
from keel.settings import Settings
from keel.slo.rollup import RollupMetrics
from keel.synthetic import checks as synthetic

# The labels that code paths use (kept next to them would scatter them over modules
# owned by other concepts; a test holds this list to the README's table).
SHED_REASONS = ("in_flight", "loop_lag")
CONCURRENCY_SCOPES = ("user", "org")
NOISY_REASONS = ("request_share", "time_share", "baseline")
FALLBACK_OPERATIONS = (
    "admit",
    "gcra",
    "quota_check",
    "quota_consume",
    "quota_refund",
    "slot_acquire",
)
DEPENDENCY_OUTCOMES = ("success", "failure", "timeout", "rejected", "client_error")
DEPENDENCY_REJECTIONS = ("breaker_open", "bulkhead_full", "retry_budget")


@dataclass(frozen=True)
class AppMetrics:
    """The metrics object of every part of one app, all on ``exposition.registry``."""

    exposition: Metrics
    """The HTTP server's families and the ``/metrics`` rendering of the whole registry."""
    resilience: ResilienceMetrics
    guard: GuardMetrics
    idempotency: IdempotencyMetrics
    jobs: JobMetrics
    loop_lag: Gauge
    log_lines_dropped: Counter
    rollups: RollupMetrics

    @property
    def registry(self) -> CollectorRegistry:
        return self.exposition.registry


def build_metrics(settings: Settings) -> AppMetrics:
    """Every family of the app on one fresh registry (``observe.metrics.open_registry``)."""
    registry = open_registry()
    return AppMetrics(
        exposition=Metrics(
            registry,
            slo_threshold=settings.slo_latency_seconds,
            version=__version__,
            release_id=settings.release_id,
            git_sha=settings.git_sha,
        ),
        resilience=ResilienceMetrics(registry),
        guard=GuardMetrics.on(registry),
        idempotency=IdempotencyMetrics(registry),
        jobs=JobMetrics(registry),
        loop_lag=loop_lag_gauge(registry),
        log_lines_dropped=dropped_lines_counter(registry),
        rollups=RollupMetrics(registry),
    )


def expose_documented_series(
    metrics: AppMetrics,
    settings: Settings,
    policy: Policy,
    idempotent_operations: Iterable[str],
    database: Database,
    clock: Clock,
) -> None:
    """Create the known children of every documented family; add the scraped collectors."""
    _guard_series(metrics.guard, policy)
    metrics.idempotency.declare(idempotent_operations)
    registry = build_registry(settings)
    metrics.jobs.declare_job_series(job_type.name for job_type in registry.job_types)
    resilience = metrics.resilience
    for outcome in DEPENDENCY_OUTCOMES:
        resilience.dependency_calls.labels(WEBHOOKS, outcome)
    for reason in DEPENDENCY_REJECTIONS:
        resilience.dependency_rejections.labels(WEBHOOKS, reason)
    resilience.dependency_duration.labels(WEBHOOKS)
    resilience.dependency_retries.labels(WEBHOOKS)
    resilience.dependency_fallbacks.labels(WEBHOOKS)

    exposition = metrics.exposition
    for method, route in synthetic.ROUTES:
        exposition.synthetic_requests.labels(method, route)
    exposition.add_live(resilience.live_collector)
    queues = {
        *parse_queues(settings.jobs_queues, DEFAULT_CONCURRENCY),
        *(job_type.queue for job_type in registry.job_types),
    }
    depth = QueueDepthCollector(
        connector_for(database),
        queues,
        clock=clock,
        timeout_seconds=settings.health_check_timeout_seconds,
    )
    exposition.add_scraped(depth, refresh=depth.refresh)


def _guard_series(metrics: GuardMetrics, policy: Policy) -> None:
    for priority in Priority:
        if priority is not Priority.PROBE:
            for reason in SHED_REASONS:
                metrics.shed.refused.labels(priority.name.lower(), reason)
    for scope in CONCURRENCY_SCOPES:
        metrics.limits.concurrency_refused.labels(scope)
        metrics.breaches.breaches.labels(f"concurrency-{scope}")
    for rule in policy.limits:
        metrics.breaches.breaches.labels(rule.name)
        if isinstance(rule, QuotaRule):
            for threshold in WARNING_THRESHOLDS:
                metrics.limits.quota_warnings.labels(rule.name, str(threshold))
    for reason in NOISY_REASONS:
        metrics.noisy.flags.labels(reason)
    for operation in FALLBACK_OPERATIONS:
        metrics.fallback.decisions.labels(operation=operation)


__all__ = ["AppMetrics", "build_metrics", "expose_documented_series"]

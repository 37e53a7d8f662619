"""Observability: health probes, graceful shutdown, logs, traces and metrics.

``build(settings, database, store, clock, watchdog, metrics)`` makes the parts
that live on :class:`~keel.api.services.Services` (the health registry with its
checks, the lifecycle, the tracer), around the loop watchdog and the metrics
the composition root built first; ``running(observability, settings,
handle_signals=...)`` is the lifespan part (loop watchdog, SIGTERM drain,
flushing spans). Nothing here is HTTP: the trace and metrics steps of the
request path are :mod:`keel.http.trace` and :mod:`keel.http.metrics`, the
probes :mod:`keel.api.routes.operations`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import multiprocess as prometheus_multiprocess

from keel.clock import Clock
from keel.db.engine import Database
from keel.errors import KeelError
from keel.observe import checks
from keel.observe.health import HealthCheck, HealthRegistry, Observation, Status
from keel.observe.identity import identity_key
from keel.observe.lifecycle import Lifecycle
from keel.observe.logs import configure_logging
from keel.observe.metrics import Metrics, multiprocess_dir, request_histogram
from keel.observe.shutdown import DrainOnSignal
from keel.observe.tracing import build_tracer_provider
from keel.observe.watchdog import LoopWatchdog
from keel.settings import Settings
from keel.slo import load_objectives
from keel.slo.rollup import RollupCounter, RollupFlusher, RollupMetrics
from keel.storage import BlobStore

log = structlog.get_logger(__name__)


@dataclass
class Observability:
    health: HealthRegistry
    lifecycle: Lifecycle
    watchdog: LoopWatchdog
    metrics: Metrics
    tracer_provider: TracerProvider
    identity_key: bytes
    rollups: RollupFlusher | None = None
    """The SLO rollups' counts and their flusher (None: the SLO file is refused)."""


def build(
    settings: Settings,
    database: Database,
    store: BlobStore,
    clock: Clock,
    watchdog: LoopWatchdog,
    metrics: Metrics,
    rollup_metrics: RollupMetrics | None = None,
) -> Observability:
    """``watchdog`` is shared with load shedding: one loop-lag measurement per process;
    ``metrics``: the app's registry and its exposition, built first by the composition root."""
    health = HealthRegistry(
        clock=clock,
        cache_seconds=settings.health_cache_seconds,
        default_timeout=settings.health_check_timeout_seconds,
    )
    health.register(checks.database_check(database))
    health.register(checks.schema_check(database))
    health.register(checks.storage_check(store))
    if settings.redis_url:
        health.register(checks.redis_check(settings.redis_url))
    return Observability(
        health=health,
        lifecycle=Lifecycle(clock),
        watchdog=watchdog,
        metrics=metrics,
        tracer_provider=build_tracer_provider(settings),
        identity_key=identity_key(settings.secret_key.get_secret_value().encode()),
        rollups=build_rollups(settings, database, rollup_metrics),
    )


def build_rollups(
    settings: Settings, database: Database, metrics: RollupMetrics | None = None
) -> RollupFlusher | None:
    """The per-minute SLO counts of this process, for the SLOs of ``KEEL_SLO_FILE``.

    A refused SLO file does not stop the service (``/version`` reports it and
    ``keel slo rules`` explains it); it only means nothing is rolled up.
    """
    try:
        objectives = load_objectives(
            settings.slo_file, request_histogram(settings.slo_latency_seconds)
        )
    except KeelError as error:
        log.warning("slo_rollups_off", error=error.detail)
        return None
    return RollupFlusher(
        database,
        RollupCounter(objectives, metrics),
        flush_seconds=settings.slo_rollup_flush_seconds,
    )


@asynccontextmanager
async def running(
    observability: Observability, settings: Settings, *, handle_signals: bool
) -> AsyncIterator[None]:
    observability.watchdog.start()
    if observability.rollups is not None:
        await observability.rollups.start()
    drain = DrainOnSignal(observability.lifecycle, settings.shutdown_drain_seconds)
    if handle_signals:
        drain.install()
    try:
        yield
    finally:
        observability.lifecycle.begin_draining()
        drain.uninstall()
        if observability.rollups is not None:
            await observability.rollups.stop()  # the last requests' counts, flushed
        await observability.watchdog.stop()
        observability.tracer_provider.shutdown()
        if multiprocess_dir() is not None:
            prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


__all__ = [
    "HealthCheck",
    "HealthRegistry",
    "Lifecycle",
    "Observability",
    "Observation",
    "Status",
    "build",
    "configure_logging",
    "identity_key",
    "running",
]

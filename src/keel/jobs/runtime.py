"""Running workers: standalone (``keel worker``) or inside ``keel serve``.

Both build the same :class:`~keel.jobs.worker.Worker` from settings; they differ
in who owns the database and the stop signal. The app's lifespan stops the
in-process one; ``keel.workerd`` runs the standalone one (its probe port, its
SIGTERM drain).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog

from keel.audit import build_auditor
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.jobs.catalog import build_registry
from keel.jobs.metrics import JobMetrics
from keel.jobs.registry import JobResources, Registry
from keel.jobs.worker import Worker, WorkerConfig, parse_queues
from keel.resilience import BreakerRegistry, DependencyPool, ResilienceMetrics
from keel.resilience.auditing import audit_breaker_transitions
from keel.resilience.wiring import breaker_store, build_webhooks
from keel.settings import Settings
from keel.storage import BlobStore
from keel.synthetic.metrics import SyntheticMetrics

log = structlog.get_logger(__name__)

DEFAULT_CONCURRENCY = 4
STOP_CANCEL_SECONDS = 2.0  # a worker past its grace, cancelled: how long its unwinding may take


def inprocess_enabled(settings: Settings) -> bool:
    if settings.inprocess_worker == "auto":
        return settings.is_sqlite
    return settings.inprocess_worker == "on"


def worker_config(
    settings: Settings, queues: dict[str, int] | None = None, *, run_periodic: bool = True
) -> WorkerConfig:
    return WorkerConfig(
        queues=queues or parse_queues(settings.jobs_queues, DEFAULT_CONCURRENCY),
        lease_seconds=settings.jobs_lease_seconds,
        poll_seconds=settings.jobs_poll_seconds,
        listen_poll_seconds=settings.jobs_listen_poll_seconds,
        grace_seconds=settings.jobs_grace_seconds,
        run_periodic=run_periodic,
    )


@asynccontextmanager
async def resources(
    settings: Settings,
    database: Database,
    store: BlobStore,
    clock: Clock = SYSTEM_CLOCK,
    webhooks: DependencyPool | None = None,
    metrics: ResilienceMetrics | None = None,
    synthetic: SyntheticMetrics | None = None,
) -> AsyncIterator[JobResources]:
    """Handlers' resources, one set per worker (one auditor among them). ``webhooks``
    is the app's pool inside ``keel serve`` (its breakers in the app's registry,
    metrics and audit); otherwise the worker's own, sharing breaker state through the
    configured store, its transitions audited as the app's are and its breakers
    counted in ``metrics`` (the worker's registry)."""
    audit = build_auditor(settings, database, clock=clock)
    registry: BreakerRegistry | None = None
    if webhooks is None:
        registry = BreakerRegistry(
            store=breaker_store(settings),
            clock=clock,
            metrics=metrics,
            listeners=(audit_breaker_transitions(audit),),
        )
        webhooks = build_webhooks(settings, clock=clock, registry=registry, metrics=metrics)
    try:
        async with httpx.AsyncClient(timeout=settings.webhook_timeout_seconds) as http:
            yield JobResources(
                database=database,
                settings=settings,
                clock=clock,
                store=store,
                http=http,
                webhooks=webhooks,
                audit=audit,
                synthetic=synthetic,
            )
    finally:
        if registry is not None and registry.store is not None:
            await registry.store.aclose()


class InProcessWorker:
    """A worker as a task of the app's event loop (the embedded default)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        store: BlobStore,
        clock: Clock = SYSTEM_CLOCK,
        registry: Registry | None = None,
        webhooks: DependencyPool | None = None,
        metrics: JobMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._database = database
        self._store = store
        self._clock = clock
        self._webhooks = webhooks
        self._registry = registry or build_registry(settings)
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.worker: Worker | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name="keel-inprocess-worker")
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait([self._task, started], return_when=asyncio.FIRST_COMPLETED)
        if not self._started.is_set():  # the worker failed before it could start
            started.cancel()
            await self._task  # raises the worker's error

    async def _main(self) -> None:
        synthetic = self._metrics.synthetic if self._metrics is not None else None
        async with resources(
            self._settings,
            self._database,
            self._store,
            self._clock,
            self._webhooks,
            synthetic=synthetic,
        ) as res:
            self.worker = Worker(
                res, self._registry, worker_config(self._settings), metrics=self._metrics
            )
            self._started.set()
            await self.worker.run()

    async def stop(self) -> None:
        """Let running jobs finish within their grace; past it, say so and cancel them."""
        if self.worker is not None:
            self.worker.stop()
        if self._task is None:
            return
        bound = self._settings.jobs_grace_seconds + 10
        done, _ = await asyncio.wait([self._task], timeout=bound)
        if not done:
            log.error("inprocess_worker_stop_abandoned", after_seconds=bound)
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_CANCEL_SECONDS)

"""``keel worker``: one job worker process with its probes and metrics on a port of its own.

The worker is the one ``keel serve`` runs in-process (``keel.jobs.worker``), built
the same way (``keel.jobs.runtime``). Around it: a health registry with the
worker's checks, the loop watchdog ``/live`` reads, and the HTTP port. SIGTERM
or SIGINT marks the process draining (``/ready`` fails at once, ``/live`` stays
up), stops claiming, lets running jobs finish within ``KEEL_JOBS_GRACE_SECONDS``
and releases the rest; the port closes last, so probes answer throughout.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.jobs.catalog import build_registry
from keel.jobs.runtime import resources, worker_config
from keel.observe import checks
from keel.observe.health import HealthRegistry
from keel.observe.lifecycle import Lifecycle
from keel.observe.logs import configure_logging
from keel.observe.watchdog import LoopWatchdog
from keel.settings import Settings
from keel.storage import from_settings
from keel.workerd.checks import ObservedWorker, job_store_check, lease_loop_check
from keel.workerd.http import Probes, ProbeServer, probe_app
from keel.workerd.metrics import WorkerExposition, WorkerMetrics, queue_depth

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class HttpPort:
    """Where a worker serves its probes; port 0 means no port at all."""

    host: str
    port: int

    @classmethod
    def from_settings(
        cls, settings: Settings, *, host: str | None = None, port: int | None = None
    ) -> HttpPort:
        return cls(
            host if host is not None else settings.worker_http_host,
            port if port is not None else settings.worker_http_port,
        )

    @property
    def enabled(self) -> bool:
        return self.port != 0


def health_registry(settings: Settings, clock: Clock) -> HealthRegistry:
    return HealthRegistry(
        clock=clock,
        cache_seconds=settings.health_cache_seconds,
        default_timeout=settings.health_check_timeout_seconds,
    )


@asynccontextmanager
async def serving(
    port: HttpPort, probes: Probes, lifecycle: Lifecycle
) -> AsyncIterator[ProbeServer | None]:
    """The port from before the work starts until after it has stopped (or no port).

    The loop watchdog runs only with a port: ``/live`` is its one reader, and without
    one its twenty wake-ups a second would be the worker's only idle work."""
    if port.enabled:
        probes.watchdog.start()
    server = ProbeServer(probe_app(probes), host=port.host, port=port.port)
    try:
        if port.enabled:
            await server.start()
            log.info("worker_http_listening", host=port.host, port=server.port)
        yield server if port.enabled else None
    finally:
        lifecycle.begin_draining()
        await server.stop()
        await probes.watchdog.stop()


PARENT_CHECK_SECONDS = 1.0


async def _drain_when_orphaned(parent: int, drain: Callable[[], None]) -> None:
    """A supervisor killed outright (SIGKILL) cannot drain its children: each drains
    itself once it sees it has a new parent."""
    while True:  # no event tells a process its parent died (short of prctl): poll
        await asyncio.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            break
    log.warning("worker_supervisor_gone", supervisor=parent)
    drain()


async def run_worker(
    settings: Settings,
    queues: dict[str, int] | None,
    port: HttpPort,
    *,
    clock: Clock = SYSTEM_CLOCK,
    supervised: bool = False,
) -> None:
    """Work until SIGTERM/SIGINT, serving probes and metrics on ``port``; then drain.

    ``supervised``: a child of ``--autoscale``, which also drains when its parent is gone.
    """
    registry = build_registry(settings)
    metrics = WorkerMetrics()
    # Logging again, now with a counter for the lines a slow sink makes it drop.
    configure_logging(settings, dropped_lines=metrics.log_lines_dropped)
    metrics.jobs.declare_job_series(job_type.name for job_type in registry.job_types)
    config = worker_config(settings, queues)
    database = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        timeout=settings.database_timeout_seconds,
    )
    lifecycle = Lifecycle(clock)
    health = health_registry(settings, clock)
    depth = queue_depth(database, config.queues, clock, settings.health_check_timeout_seconds)
    probes = Probes(
        health=health,
        lifecycle=lifecycle,
        watchdog=LoopWatchdog(gauge=metrics.loop_lag),
        metrics=WorkerExposition(depth, own=[metrics.registry]).render,
        release_id=settings.release_id,
        service_id=settings.service_id,
        description="worker",
        live_lag_warn_seconds=settings.live_loop_lag_warn_seconds,
    )
    store = from_settings(settings)
    try:
        async with resources(
            settings,
            database,
            store,
            clock,
            metrics=metrics.resilience,
            synthetic=metrics.jobs.synthetic,
        ) as res:
            worker = ObservedWorker(res, registry, config, metrics=metrics.jobs)
            health.register(checks.database_check(database))
            health.register(checks.schema_check(database))
            health.register(job_store_check(database, config.queues))
            health.register(
                lease_loop_check(lambda: worker.heartbeat_at, config.lease_seconds, clock)
            )

            def drain() -> None:
                if not lifecycle.draining:
                    log.info("worker_draining", grace_seconds=config.grace_seconds)
                lifecycle.begin_draining()
                worker.stop()

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, drain)
            watch = (
                asyncio.create_task(_drain_when_orphaned(os.getppid(), drain))
                if supervised
                else None
            )
            try:
                async with serving(port, probes, lifecycle):
                    await worker.run()
            finally:
                if watch is not None:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
    finally:
        await store.aclose()
        await database.dispose()

"""The composition root: ``create_app(settings)`` wires every part of Keel.

Nothing here opens a connection at import time; the lifespan does, and closes
what it opened. The CLI, the tests and uvicorn's factory mode all come through
this one function, so they run the same wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Protocol

import structlog
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from keel import __version__, migrations, observe
from keel.api.services import Services
from keel.audit import build_auditor
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.domain.evidence import UploadRules
from keel.domain.tokens import Authenticator
from keel.guard.idempotency import store_for
from keel.guard.notify import quota_warning_hook
from keel.guard.wiring import build_limits
from keel.http import openapi, pipeline
from keel.http.routes import route_table
from keel.http.tracing import native_telemetry_off
from keel.jobs.runtime import InProcessWorker, inprocess_enabled
from keel.metric_series import build_metrics, expose_documented_series
from keel.observe.stop_budget import StopBudget
from keel.observe.watchdog import LoopWatchdog
from keel.readiness import register_readiness_checks
from keel.resilience import BreakerGate, BreakerListener, BreakerRegistry
from keel.resilience.auditing import audit_breaker_transitions
from keel.resilience.wiring import (
    breaker_store,
    build_database_breaker,
    build_dependencies,
    build_webhooks,
)
from keel.settings import Settings
from keel.storage import ResilientBlobStore, from_settings

log = structlog.get_logger(__name__)

DOCS_ASSETS = "/docs/assets"


class Part(Protocol):
    """A part of the app with a lifecycle: started once by the lifespan, stopped once."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_services(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    breaker_listeners: tuple[BreakerListener, ...] = (),
) -> Services:
    """Every service of the app, each built after what it needs and handed it.

    Metrics (one registry for every part) → database (behind its breaker, built
    first) → audit → resilience (the breaker registry, with the audit log among
    its listeners; the database's breaker joins it as a member) → limits →
    idempotency → observability. Breaker transitions also go to
    ``breaker_listeners``. Nothing is assigned into a part once it is built.
    """
    metrics = build_metrics(settings)
    breakers = breaker_store(settings)
    database_breaker = build_database_breaker(
        settings, clock=clock, store=breakers, metrics=metrics.resilience
    )
    database = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        timeout=settings.database_timeout_seconds,
        breaker=BreakerGate(database_breaker),
    )
    audit = build_auditor(settings, database, clock=clock)
    registry = BreakerRegistry(
        store=breakers,
        clock=clock,
        metrics=metrics.resilience,
        listeners=(*breaker_listeners, audit_breaker_transitions(audit)),
        members=(database_breaker,),
    )
    dependencies = build_dependencies(settings, registry, clock=clock, metrics=metrics.resilience)
    webhooks = build_webhooks(settings, clock=clock, registry=registry, metrics=metrics.resilience)
    store = ResilientBlobStore(from_settings(settings), dependencies.storage)
    # One loop-lag measurement for the process: /live reports it, load shedding reads it.
    watchdog = LoopWatchdog(gauge=metrics.loop_lag)
    limits = build_limits(
        settings,
        database,
        clock,
        watchdog,
        redis_breaker=BreakerGate(dependencies.redis.breaker),
        audit=audit,
        threshold_hooks=(quota_warning_hook(database, audit, clock),),
        metrics=metrics.guard,
    )
    idempotency = store_for(
        database,
        lease_seconds=settings.idempotency_lease_seconds,
        retention_seconds=settings.idempotency_retention_seconds,
    )
    return Services(
        settings=settings,
        limits=limits,
        routes=route_table(),  # every route with its facts, for the steps before the router
        idempotency=idempotency,
        dependencies=dependencies,
        webhooks=webhooks,
        database=database,
        store=store,
        authenticator=Authenticator(
            database,
            settings.secret_key.get_secret_value().encode(),
            cache_seconds=settings.auth_cache_seconds,
            clock=clock,
            observer=audit.authentication,
        ),
        upload_rules=UploadRules(
            max_bytes=settings.max_upload_bytes,
            allowed_content_types=tuple(settings.allowed_content_types),
        ),
        clock=clock,
        audit=audit,
        metrics=metrics,
        observe=observe.build(
            settings, database, store, clock, watchdog, metrics.exposition, metrics.rollups
        ),
    )


async def run_parts(stack: AsyncExitStack, services: Services, *, handle_signals: bool) -> None:
    """Start every part with a lifecycle, in dependency order, on ``stack``.

    The stack leaves them in reverse: the in-process worker first, the database last,
    each step within what is left of one :class:`StopBudget` (a worker's kill grace:
    what the ``--workers`` supervisor allows past drain and grace).
    """
    settings = services.settings
    budget = StopBudget(settings.serve_worker_kill_grace_seconds)
    await services.database.start()
    stack.push_async_callback(budget.bounded("database", services.database.stop))
    stack.push_async_callback(budget.bounded("storage", services.store.aclose))
    await migrations.require_head(services.database)
    parts: tuple[tuple[str, Part], ...] = (
        ("audit", services.audit),
        ("dependencies", services.dependencies),
        ("limits", services.limits),
    )
    for name, part in parts:
        await part.start()
        stack.push_async_callback(budget.bounded(name, part.stop))
    observing = observe.running(services.observe, settings, handle_signals=handle_signals)
    await observing.__aenter__()
    stack.push_async_callback(
        budget.bounded("observability", partial(observing.__aexit__, None, None, None))
    )
    if inprocess_enabled(settings):
        worker = InProcessWorker(
            settings,
            services.database,
            services.store,
            services.clock,
            webhooks=services.webhooks,
            metrics=services.metrics.jobs,
        )
        await worker.start()
        stack.push_async_callback(worker.stop)  # bounded by the jobs' own grace


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    handle_signals: bool = False,
) -> FastAPI:
    """``handle_signals``: drain on SIGTERM (only under a real server: ``keel serve``)."""
    settings = settings or Settings()
    settings.check_startable()
    services = build_services(settings, clock=clock)
    register_readiness_checks(
        services.health,
        services.database,
        services.limits,
        shared=bool(settings.redis_url),
    )
    expose_documented_series(
        services.metrics,
        settings,
        services.limits.guard.policy,
        services.routes.keyed(),
        services.database,
        services.clock,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await run_parts(stack, services, handle_signals=handle_signals)
            log.info("keel_started", version=__version__, env=settings.env.value)
            try:
                yield
            finally:
                await stack.aclose()
                log.info("keel_stopped")

    # /docs and /redoc with their Swagger UI and ReDoc assets served from the installed
    # package (under DOCS_ASSETS), never a CDN: the docs work offline and leak no visits.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="Keel",
        version=__version__,
        summary="Recognitions between colleagues, on a reliability layer you can lean on.",
        lifespan=lifespan,
        redirect_slashes=False,
        **native_telemetry_off(),  # Keel's observe package owns telemetry
    )
    app.state.services = services
    pipeline.install(app, services)
    openapi.finish(app, settings, services.health)
    return app


def create_app_from_environment() -> FastAPI:
    """uvicorn's factory entry point (``keel serve`` and ``--workers N``)."""
    return create_app(Settings(), handle_signals=True)

"""The composition root: ``create_app(settings)`` wires every part of Keel.

Nothing here opens a connection at import time; the lifespan does, and closes
what it opened. The CLI, the tests and uvicorn's factory mode all come through
this one function, so they run the same wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from keel import __version__, observe
from keel.api import problems
from keel.api.authentication import AuthenticationMiddleware
from keel.api.routes import evidence, exports, recognitions, users
from keel.api.routes.exports import schedule
from keel.api.services import Services
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db import migrate
from keel.db.engine import Database
from keel.domain import exports as export_domain
from keel.domain.evidence import UploadRules
from keel.domain.tokens import Authenticator
from keel.observe.tracing import native_telemetry_off
from keel.settings import Settings
from keel.storage import LocalDirectoryStore
from keel.tasks import BackgroundTasks

log = structlog.get_logger(__name__)


def build_services(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> Services:
    database = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        timeout=settings.database_timeout_seconds,
    )
    store = LocalDirectoryStore(settings.storage_dir)
    return Services(
        settings=settings,
        database=database,
        store=store,
        authenticator=Authenticator(
            database,
            settings.secret_key.get_secret_value().encode(),
            cache_seconds=settings.auth_cache_seconds,
            clock=clock,
        ),
        upload_rules=UploadRules(
            max_bytes=settings.max_upload_bytes,
            allowed_content_types=tuple(settings.allowed_content_types),
        ),
        background=BackgroundTasks(),
        clock=clock,
        observe=observe.build(settings, database, store, clock),
    )


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

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await migrate.require_head(services.database)
        for export_id in await export_domain.unfinished(services.database):
            schedule(services, export_id)
        log.info("keel_started", version=__version__, env=settings.env.value)
        async with observe.running(services.observe, settings, handle_signals=handle_signals):
            try:
                yield
            finally:
                await services.background.drain(settings.shutdown_grace_seconds)
                await services.database.dispose()
                log.info("keel_stopped")

    app = FastAPI(
        title="Keel",
        version=__version__,
        summary="Recognitions between colleagues, on a reliability layer you can lean on.",
        lifespan=lifespan,
        redirect_slashes=False,
        **native_telemetry_off(),  # Keel's observe package owns telemetry (issue 3)
    )
    app.state.services = services
    problems.install(app)
    for router in (recognitions.router, evidence.router, exports.router, users.router):
        app.include_router(router)
    app.add_middleware(AuthenticationMiddleware, authenticator=services.authenticator)
    # --- observability (issue 3): endpoints, then trace → metrics as the OUTERMOST
    # middleware. Starlette makes the last added the outermost, so this block stays
    # after every other add_middleware (shed, limits, idempotency go above it).
    observe.install(app, services.observe, settings, services.database)
    return app


def create_app_from_environment() -> FastAPI:
    """uvicorn's factory entry point (``keel serve`` and ``--workers N``)."""
    return create_app(Settings(), handle_signals=True)

"""The composition root: ``create_app(settings)`` wires every part of Keel.

Nothing here opens a connection at import time; the lifespan does, and closes
what it opened. The CLI, the tests and uvicorn's factory mode all come through
this one function, so they run the same wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from keel import __version__, migrations, observe
from keel.api import problems
from keel.api.authentication import AuthenticationMiddleware
from keel.api.boundary import ErrorBoundaryMiddleware
from keel.api.json_body import JsonBodyLimits
from keel.api.response_headers import ResponseHeaderCheck
from keel.api.routes import audit as audit_routes
from keel.api.routes import evidence, exports, quotas, recognitions, users
from keel.api.routing import RouteTable
from keel.api.services import Services
from keel.audit import build_auditor
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.domain.evidence import UploadRules
from keel.domain.tokens import Authenticator
from keel.errors import ConfigurationError
from keel.guard.idempotency import (
    IdempotencyMiddleware,
    ReplayMiddleware,
    SqlIdempotencyStore,
)
from keel.guard.limits import LimitsMiddleware
from keel.guard.notify import audit_key_mismatch, quota_warning_hook
from keel.guard.shed import LoadSheddingMiddleware
from keel.guard.wiring import OPERATIONS, build_limits
from keel.jobs.runtime import InProcessWorker, inprocess_enabled
from keel.metric_series import expose_documented_series
from keel.observe.tracing import native_telemetry_off
from keel.observe.watchdog import LoopWatchdog
from keel.readiness import register_readiness_checks
from keel.resilience import BreakerGate, BreakerListener
from keel.resilience.auditing import audit_breaker_transitions
from keel.resilience.wiring import build_database_breaker, build_dependencies, build_webhooks
from keel.settings import Settings
from keel.storage import ResilientBlobStore, from_settings

log = structlog.get_logger(__name__)

DOCS_ASSETS = "/docs/assets"

ROUTERS = (
    recognitions.router,
    evidence.router,
    exports.router,
    users.router,
    quotas.router,
    audit_routes.router,
)


def build_services(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    breaker_listeners: tuple[BreakerListener, ...] = (),
) -> Services:
    """Every service of the app. Breaker transitions go to the audit log and to
    ``breaker_listeners`` (more can join through
    ``services.dependencies.registry.add_listener``)."""
    dependencies = build_dependencies(settings, clock=clock, listeners=breaker_listeners)
    database_breaker = build_database_breaker(dependencies.registry, settings)
    for listener in breaker_listeners:
        database_breaker.breaker.add_listener(listener)
    database = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        timeout=settings.database_timeout_seconds,
        breaker=database_breaker,
    )
    routes = RouteTable(ROUTERS, OPERATIONS)  # limits and idempotency resolve templates here
    # One loop-lag measurement for the process: /live reports it, load shedding reads it.
    watchdog = LoopWatchdog()
    limits = build_limits(
        settings,
        database,
        routes,
        clock,
        watchdog,
        redis_breaker=BreakerGate(dependencies.redis.breaker),
    )
    audit = build_auditor(settings, database, clock=clock)
    dependencies.registry.add_listener(audit_breaker_transitions(audit))
    store = ResilientBlobStore(from_settings(settings), dependencies.storage)
    return Services(
        settings=settings,
        limits=limits,
        routes=routes,
        dependencies=dependencies,
        webhooks=build_webhooks(settings, clock=clock, registry=dependencies.registry),
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
        observe=observe.build(settings, database, store, clock, watchdog),
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
    register_readiness_checks(services)
    services.limits.guard.breaches.audit = services.audit
    services.limits.guard.threshold_hooks.append(
        quota_warning_hook(services.database, services.audit, clock)
    )
    expose_documented_series(services, IDEMPOTENT_OPERATIONS)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await migrations.require_head(services.database)
        await services.limits.start()
        for breaker in services.dependencies.registry:
            await breaker.sync()  # announce our breakers in the shared store (bounded)
        services.audit.authentication.start()
        worker: InProcessWorker | None = None
        if inprocess_enabled(settings):
            worker = InProcessWorker(
                settings, services.database, services.store, clock, webhooks=services.webhooks
            )
            await worker.start()
        log.info("keel_started", version=__version__, env=settings.env.value)
        async with observe.running(services.observe, settings, handle_signals=handle_signals):
            try:
                yield
            finally:
                if worker is not None:
                    await worker.stop()
                await services.limits.stop()
                await services.audit.authentication.stop()
                if services.dependencies.registry.store is not None:
                    await services.dependencies.registry.store.aclose()
                await services.database.dispose()
                await services.store.aclose()
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
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # Middleware, innermost first (Starlette wraps each added one around the previous):
    # ... → boundary → shed → auth → JSON body limits → replay → limits → idempotency →
    # header check → routes. The replay step answers retries of finished keyed requests
    # before the limits (they spend nothing); JSON bodies are bounded before anything
    # parses them (the idempotency fingerprint, the route).
    app.add_middleware(ResponseHeaderCheck)
    idempotency = add_idempotency(app, services) if settings.idempotency_enabled else None
    app.add_middleware(LimitsMiddleware, guard=services.limits.guard)
    if idempotency is not None:
        app.add_middleware(ReplayMiddleware, **idempotency)
    app.add_middleware(JsonBodyLimits)
    app.add_middleware(
        AuthenticationMiddleware,
        authenticator=services.authenticator,
        on_failure=services.limits.guard.failed_authentication,
    )
    app.add_middleware(
        LoadSheddingMiddleware,
        shedder=services.limits.shedder,
        routes=services.limits.guard.routes,
    )
    # Outside every Keel middleware: whatever they or the routes raise is answered
    # (503 for an unavailable database, never a 500 or a dropped connection).
    app.add_middleware(ErrorBoundaryMiddleware)
    # --- observability: endpoints, then trace → metrics as the OUTERMOST
    # middleware. Starlette makes the last added the outermost, so this block stays
    # after every other add_middleware.
    observe.install(app, services.observe, settings, services.database)
    _finish_openapi(app, settings)
    return app


def _finish_openapi(app: FastAPI, settings: Settings) -> None:
    """Finish the OpenAPI document with what only the running configuration knows.

    Which file types this deployment accepts is a setting, and so is which
    operations require an ``Idempotency-Key`` (those say ``required: true``); and
    every ``/v1`` operation can be refused by the layers in front of the routes —
    401 by authentication, 429 by limits, 503 by load shedding or a dependency —
    so each documents those problems too.
    """
    allowed = settings.allowed_content_types
    required = set(settings.idempotency_required_routes) if settings.idempotency_enabled else set()
    generate = app.openapi
    everywhere = problems.problem_responses(401, 429, 503)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            upload = schema["paths"]["/v1/evidence"]["post"]["requestBody"]["content"]
            upload["multipart/form-data"]["encoding"] = {
                "file": {"contentType": ", ".join(allowed)}
            }
            reference = {"$ref": "#/components/schemas/Problem"}
            problem = {problems.MEDIA_TYPE: {"schema": reference}}
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    # FastAPI documents its own 422 body; Keel answers problem+json.
                    invalid = operation.get("responses", {}).get("422")
                    if invalid is not None and "application/json" in invalid.get("content", {}):
                        invalid["content"] = problem
                if not path.startswith("/v1/"):
                    continue
                for method, operation in operations.items():
                    if "parameters" in operation:
                        operation["parameters"] = [
                            {**parameter, "required": f"{method.upper()} {path}" in required}
                            if parameter.get("name") == "Idempotency-Key"
                            else parameter
                            for parameter in operation["parameters"]
                        ]
                    responses = operation.setdefault("responses", {})
                    for status, documented in everywhere.items():
                        responses.setdefault(
                            str(status),
                            {
                                "description": documented["description"],
                                "content": problem,
                            },
                        )
            _document_readiness_checks(schema, app)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_readiness_checks(schema: dict[str, Any], app: FastAPI) -> None:
    """``/ready?exclude=`` takes the names of the registered checks (others are a 422)."""
    names = sorted(check.name for check in app.state.services.observe.health.checks)
    for parameter in schema["paths"]["/ready"]["get"].get("parameters", []):
        if parameter["name"] != "exclude":
            continue
        for option in parameter["schema"].get("anyOf", []):
            if option.get("type") == "array":
                option["items"] = {"type": "string", "enum": names}


# The creating operations that take an Idempotency-Key; their routes store their
# outcome with keel.guard.idempotency.recorded() inside their write transaction.
IDEMPOTENT_OPERATIONS = ("POST /v1/recognitions", "POST /v1/evidence", "POST /v1/exports")


def add_idempotency(app: FastAPI, services: Services) -> dict[str, Any]:
    """Add the idempotency middleware; returns the options of its replay step, which
    ``create_app`` places in front of the limits."""
    settings = services.settings
    unknown = set(settings.idempotency_required_routes) - set(IDEMPOTENT_OPERATIONS)
    if unknown:
        raise ConfigurationError(
            f"KEEL_IDEMPOTENCY_REQUIRED_ROUTES names operations that take no key: "
            f"{sorted(unknown)}; choose from {list(IDEMPOTENT_OPERATIONS)}"
        )
    for operation in IDEMPOTENT_OPERATIONS:
        method, path = operation.split(" ", 1)
        matched = services.routes.match(method, path)
        if matched is None or matched[0] != operation:
            raise ConfigurationError(f"no route serves {operation}: it cannot take keys")
    store = SqlIdempotencyStore(
        services.database,
        lease_seconds=settings.idempotency_lease_seconds,
        retention_seconds=settings.idempotency_retention_seconds,
    )
    shared: dict[str, Any] = {
        "store": store,
        "routes": services.routes,
        "operations": IDEMPOTENT_OPERATIONS,
        "clock": services.clock,
        "max_body_bytes": settings.max_upload_bytes + 1024 * 1024,
        "on_mismatch": audit_key_mismatch(services.audit),
    }
    app.add_middleware(
        IdempotencyMiddleware,
        required=settings.idempotency_required_routes,
        lease_seconds=settings.idempotency_lease_seconds,
        **shared,
    )
    return shared


def create_app_from_environment() -> FastAPI:
    """uvicorn's factory entry point (``keel serve`` and ``--workers N``)."""
    return create_app(Settings(), handle_signals=True)

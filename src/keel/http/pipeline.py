"""The request pipeline, in order: the one place that says what a request meets.

Outermost first::

    server spans (OpenTelemetry) → trace → metrics → draining → error boundary
    → probes → shedding → [fault injection] → authentication → JSON body limits → replay → limits
    → idempotency → header check → the route

- **trace** binds request and trace ids to every log line and writes the access line;
  **metrics** times the request by route template. Both see every request, the
  refused ones too (they are off with ``KEEL_OBSERVE_ENABLED=false``, and so are spans).
- **draining** says ``Connection: close`` while the process shuts down.
- the **error boundary** answers whatever the steps inside raise (503 for an
  unavailable database, never a dropped connection).
- **probes**: a plain ``GET`` of a probe or ``/metrics`` is answered here, past the
  steps below and the router (:mod:`keel.http.probes`).
- **shedding** refuses by priority before any database work; it looks the route up
  once, for every later step (:class:`~keel.http.state.RequestState`).
- **fault injection** (only when ``KEEL_FAULT_*`` asks for it) fails or delays a share
  of non-probe requests, to rehearse a bad release.
- **authentication** turns the bearer token into the principal the later steps key on.
- **JSON body limits** bound a body before anything parses it (the fingerprint, the route).
- **replay** answers a retry of a finished keyed request before the limits, so it
  spends nothing; **limits** spend rate, quota and in-flight slots;
  **idempotency** claims the key and settles it when the response starts.
- the **header check** never starts a response the server cannot send.

Probes and ``/metrics`` with a query string pass shedding, authentication and the
limits untouched (those act on ``/v1`` only, or classify probes as never shed).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware

from keel.api.routes import console, operations
from keel.api.routes.operations import plain_answers
from keel.api.services import Services
from keel.errors import ConfigurationError
from keel.guard.notify import audit_key_mismatch
from keel.http import problems
from keel.http.authentication import AuthenticationMiddleware
from keel.http.boundary import ErrorBoundaryMiddleware
from keel.http.draining import CloseWhenDraining
from keel.http.faults import FaultInjection
from keel.http.idempotency import IdempotencyMiddleware
from keel.http.json_body import JsonBodyLimits
from keel.http.limits import LimitsMiddleware
from keel.http.metrics import MetricsMiddleware
from keel.http.probes import OperationalShortcut
from keel.http.replay import ReplayMiddleware
from keel.http.response_headers import ResponseHeaderCheck
from keel.http.routes import ROUTERS
from keel.http.shed import LoadSheddingMiddleware
from keel.http.trace import RequestContextMiddleware
from keel.http.tracing import add_server_spans
from keel.observe.logs import configure_logging
from keel.observe.tracing import instrument_engine


def install(app: FastAPI, services: Services) -> None:
    """Mount the routes and the error handlers, and put the pipeline in front of them."""
    settings = services.settings
    observability = services.observe
    configure_logging(settings, dropped_lines=services.metrics.log_lines_dropped)
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(operations.router)
    app.include_router(console.router)
    observability.metrics.watch_pool(services.database.engine)
    for step in reversed(steps(services)):  # Starlette wraps each added one around the last
        app.add_middleware(step.cls, *step.args, **step.kwargs)
    if settings.observe_enabled:
        # OpenTelemetry's ASGI middleware wraps all of the above (span from traceparent).
        add_server_spans(app, observability.tracer_provider)
        instrument_engine(services.database.engine, observability.tracer_provider)


def steps(services: Services) -> list[Middleware]:
    """The middleware of the request path, outermost first."""
    settings = services.settings
    observability = services.observe
    limits = services.limits
    observed = (
        [
            Middleware(RequestContextMiddleware, identity_key=observability.identity_key),
            Middleware(
                MetricsMiddleware,
                metrics=observability.metrics,
                rollups=observability.rollups.counter if observability.rollups else None,
                clock=services.clock,
            ),
        ]
        if settings.observe_enabled
        else []
    )
    keyed = idempotency_options(services) if settings.idempotency_enabled else None
    faults = (
        [
            Middleware(
                FaultInjection,
                error_rate=settings.fault_error_rate,
                latency_seconds=settings.fault_latency_ms / 1000,
            )
        ]
        if settings.faults_enabled
        else []
    )
    return [
        *observed,
        Middleware(CloseWhenDraining, lifecycle=observability.lifecycle),
        Middleware(ErrorBoundaryMiddleware),
        Middleware(OperationalShortcut, answers=plain_answers(observability, settings)),
        Middleware(LoadSheddingMiddleware, shedder=limits.shedder, routes=services.routes),
        *faults,
        Middleware(
            AuthenticationMiddleware,
            authenticator=services.authenticator,
            on_failure=limits.guard.failed_authentication,
        ),
        Middleware(JsonBodyLimits),
        *([Middleware(ReplayMiddleware, **keyed)] if keyed is not None else []),
        Middleware(LimitsMiddleware, guard=limits.guard, routes=services.routes),
        *(
            [
                Middleware(
                    IdempotencyMiddleware,
                    required=settings.idempotency_required_routes,
                    lease_seconds=settings.idempotency_lease_seconds,
                    **keyed,
                )
            ]
            if keyed is not None
            else []
        ),
        Middleware(ResponseHeaderCheck),
    ]


def idempotency_options(services: Services) -> dict[str, Any]:
    """What the replay and the idempotency steps share; refuses required routes that take
    no key (``KEEL_IDEMPOTENCY_REQUIRED_ROUTES`` names operations from the route facts)."""
    settings = services.settings
    keyed = services.routes.keyed()
    unknown = set(settings.idempotency_required_routes) - set(keyed)
    if unknown:
        raise ConfigurationError(
            f"KEEL_IDEMPOTENCY_REQUIRED_ROUTES names operations that take no key: "
            f"{sorted(unknown)}; choose from {list(keyed)}"
        )
    return {
        "store": services.idempotency,
        "metrics": services.metrics.idempotency,
        "routes": services.routes,
        "clock": services.clock,
        "max_body_bytes": settings.max_upload_bytes + 1024 * 1024,
        "on_mismatch": audit_key_mismatch(services.audit),
    }

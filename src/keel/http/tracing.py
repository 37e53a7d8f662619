"""Server spans: OpenTelemetry's ASGI middleware, configured for Keel's request path.

The tracer provider is built by :mod:`keel.observe.tracing`; here it is put
in front of the pipeline. Probes and ``/metrics`` are not traced, the
per-message ``send``/``receive`` spans are left out, and the span is named
from the route the router actually matched (:mod:`keel.http.trace`).
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from opentelemetry import metrics as otel_metrics
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import Scope

from keel.http.routes_info import OPERATIONAL_PATHS

# Matched against scheme://host/path (no query string) by the ASGI instrumentation.
EXCLUDED_URLS = ",".join(rf"^[a-z]+://[^/]*{path}$" for path in sorted(OPERATIONAL_PATHS))


def native_telemetry_off() -> dict[str, Any]:
    """``FastAPI(**native_telemetry_off())``: no second, built-in telemetry layer.

    Recent FastAPI releases ship their own OpenTelemetry layer, on by default
    against the global providers. Keel instruments each app with its own
    provider (below); running both would cost every request twice, so the
    built-in one is switched off where it exists.
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The span's first name: the method; the route template is added once routing ran.

    The FastAPI instrumentation's default finds the template by matching every
    route a second time before the request starts; Keel's request-context
    middleware names the span from the route the router actually matched
    instead (:func:`keel.http.trace.name_server_span`).
    """
    return str(scope.get("method", "HTTP")), {}


def server_span_options(provider: TracerProvider) -> dict[str, Any]:
    """How Keel configures OpenTelemetry's ASGI middleware (also used by its tests).

    No per-message ``send``/``receive`` spans; probes and ``/metrics`` excluded
    by URL; and a no-op meter provider, because Keel's HTTP metrics come from
    :class:`~keel.http.metrics.MetricsMiddleware` — the instrumentation's own
    histograms would be a second, unread copy recorded on every request.
    """
    return {
        "excluded_urls": EXCLUDED_URLS,
        "default_span_details": _span_details,
        "tracer_provider": provider,
        "meter_provider": otel_metrics.NoOpMeterProvider(),
        "exclude_spans": ["receive", "send"],
    }


def add_server_spans(app: FastAPI, provider: TracerProvider) -> None:
    """OpenTelemetry's ASGI middleware, as the outermost user middleware of ``app``.

    Call it after every other ``add_middleware``: the span must be current for
    everything else (ids in the access line, database spans as children). The
    middleware, not ``FastAPIInstrumentor.instrument_app``: the latter also
    patches ``BackgroundTask`` for every app in the process and matches every
    route once more per request to name the span.
    """
    app.add_middleware(OpenTelemetryMiddleware, **server_span_options(provider))

"""Server spans: OpenTelemetry's ASGI middleware, configured for Keel's request path.

The tracer provider is built by :mod:`keel.observe.tracing`; here it is put
in front of the pipeline. Probes and ``/metrics`` are not traced, the
per-message ``send``/``receive`` spans are left out, and the span is named
from the route the router actually matched (:mod:`keel.http.trace`).

The sampler decides first (:class:`ServerSpans`): the stock middleware collects
the request's attributes and decodes its headers before it starts the span, and
with a sampling ratio below one most requests would pay for attributes nobody
records. An unsampled request gets its non-recording span (its trace and span
ids, for the logs and the ``traceparent`` answer) and nothing else; a sampled
one goes through the stock middleware unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware, asgi_getter
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.http.routes_info import OPERATIONAL_PATHS
from keel.observe.tracing import PresetTraceIds, preset_trace_id, reset_trace_id

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


class ServerSpans(OpenTelemetryMiddleware):
    """OpenTelemetry's ASGI middleware, asking the sampler before it collects anything.

    The decision is the one the SDK would take: the same sampler, the same
    parent (the incoming ``traceparent``, extracted by the global propagator)
    and the same trace id (the parent's, or a new one that the span then takes,
    see :class:`~keel.observe.tracing.PresetTraceIds`), and an unsampled span
    gets the context the SDK would give it (flags included). Keel's samplers
    decide from those alone, never from attributes. Without an SDK tracer, with
    the SDK's own span metrics on, or with a response propagator installed,
    every request takes the stock path.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        super().__init__(app, **options)
        tracer = self.tracer
        ids = getattr(tracer, "id_generator", None)
        plain = (  # enabled, and no SDK-internal span metrics that count dropped spans too
            getattr(tracer, "_is_enabled", lambda: False)()
            and type(getattr(tracer, "_tracer_metrics", None)) is NoOpTracerMetrics
        )
        self._sampler: Sampler | None = getattr(tracer, "sampler", None) if plain else None
        self._ids = ids if isinstance(ids, PresetTraceIds) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPERATIONAL_PATHS:
            await self.app(scope, receive, send)  # probes: untraced (the excluded URLs)
            return
        if (
            self._sampler is None
            or self._ids is None
            or not is_http_instrumentation_enabled()
            or get_global_response_propagator() is not None  # type: ignore[no-untyped-call]
        ):
            await super().__call__(scope, receive, send)
            return
        parent = extract(cast(dict[str, Any], scope), getter=asgi_getter)
        remote = trace.get_current_span(parent).get_span_context()
        new_trace = not remote.is_valid
        trace_id = self._ids.draw_trace_id() if new_trace else remote.trace_id
        sampling = self._sampler.should_sample(
            parent, trace_id, str(scope["method"]), SpanKind.SERVER
        )
        if sampling.decision is not Decision.DROP:
            token = preset_trace_id(trace_id if new_trace else None)
            try:
                await super().__call__(scope, receive, send)
            finally:
                reset_trace_id(token)
            return
        random_id = (
            self._ids.is_trace_id_random() if new_trace else remote.trace_flags.random_trace_id
        )
        flags = TraceFlags.RANDOM_TRACE_ID if random_id else TraceFlags.DEFAULT
        span = NonRecordingSpan(
            SpanContext(
                trace_id,
                self._ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(flags),
                trace_state=sampling.trace_state,
            )
        )
        attached = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(attached)


def add_server_spans(app: FastAPI, provider: TracerProvider) -> None:
    """OpenTelemetry's ASGI middleware, as the outermost user middleware of ``app``.

    Call it after every other ``add_middleware``: the span must be current for
    everything else (ids in the access line, database spans as children). The
    middleware, not ``FastAPIInstrumentor.instrument_app``: the latter also
    patches ``BackgroundTask`` for every app in the process and matches every
    route once more per request to name the span.
    """
    # The stock base class is untyped, so mypy cannot see ServerSpans as an ASGI app.
    app.add_middleware(ServerSpans, **server_span_options(provider))  # type: ignore[arg-type]

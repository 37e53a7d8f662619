"""OpenTelemetry: one tracer provider per app, instrumentations bound to it.

Incoming W3C ``traceparent``/``tracestate`` are read by OpenTelemetry's ASGI
instrumentation (the middleware the FastAPI instrumentation wraps; Keel adds it
directly, see :func:`keel.http.tracing.add_server_spans`). An invalid header
starts a new trace, as the spec says; outgoing calls made with an instrumented httpx client or
Redis client carry them on. Each app gets its own provider and instruments its
own app and engine — never the libraries globally — so tests may build many
apps in one process and nothing is instrumented twice. Probes and ``/metrics``
are not traced, and the per-message ``send``/``receive`` spans are left out.

The exporter is OTLP over HTTP when ``KEEL_OTEL_ENDPOINT`` is set, none
otherwise (spans still exist, so trace ids still reach the logs). Whatever
exporter is added, it sees spans redacted (:mod:`keel.observe.span_redaction`).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

import httpx
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from sqlalchemy.ext.asyncio import AsyncEngine

from keel import __version__
from keel.observe.span_redaction import RedactingTracerProvider
from keel.redaction import Redactor
from keel.settings import Settings

_PRESET_TRACE_ID: ContextVar[int | None] = ContextVar("keel_preset_trace_id", default=None)


class PresetTraceIds(RandomIdGenerator):
    """Random ids, except a trace id drawn beforehand to take the sampling decision with.

    The server-span step decides whether a new trace is sampled before it pays
    for the span's attributes (:class:`keel.http.tracing.ServerSpans`); that
    decision is made on a trace id, and a sampled request's span must then carry
    that same id, or the ratio sampler would decide a second time on another.
    """

    def generate_trace_id(self) -> int:
        preset = _PRESET_TRACE_ID.get()
        if preset is None:
            return super().generate_trace_id()
        _PRESET_TRACE_ID.set(None)  # one span only: the request's server span
        return preset

    def draw_trace_id(self) -> int:
        return super().generate_trace_id()


def preset_trace_id(trace_id: int | None) -> Token[int | None]:
    """The trace id the next root span in this context takes (``reset`` the token after)."""
    return _PRESET_TRACE_ID.set(trace_id)


def reset_trace_id(token: Token[int | None]) -> None:
    _PRESET_TRACE_ID.reset(token)


def build_tracer_provider(settings: Settings) -> TracerProvider:
    resource = Resource.create(
        {
            "service.name": settings.service_id,
            "service.version": __version__,
            "deployment.environment.name": settings.env.value,
        }
    )
    provider = RedactingTracerProvider(
        redactor=Redactor.from_settings(settings),
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sampling_ratio)),
        id_generator=PresetTraceIds(),
    )
    if settings.otel_endpoint:
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
        )
    return provider


class _SampledOnlyEngineTracer(EngineTracer):
    """OpenTelemetry's SQLAlchemy instrumentation, minus its work on unsampled requests.

    Under the parent-based sampler a statement inside an unsampled request is
    never recorded, yet the stock listener resolves connection attributes,
    parses the operation name and starts (a non-recording) span per statement.
    Here such a statement returns at once. Statements with no current span
    (startup, background work) and in sampled requests are traced as before.
    The pool listeners are no-ops: their connection-usage counter goes to a
    no-op meter (Keel's pool gauges come from :class:`~keel.observe.metrics.Metrics`).
    """

    def _before_cur_exec(
        self, conn: Any, cursor: Any, statement: Any, params: Any, context: Any, executemany: bool
    ) -> tuple[Any, Any]:
        current = trace.get_current_span().get_span_context()
        if current.is_valid and not current.trace_flags.sampled:
            return statement, params
        traced: tuple[Any, Any] = super()._before_cur_exec(  # type: ignore[no-untyped-call]
            conn, cursor, statement, params, context, executemany
        )
        return traced

    def _pool_connect(self, *_args: Any) -> None:
        return None

    def _pool_close(self, *_args: Any) -> None:
        return None

    def _pool_checkin(self, *_args: Any) -> None:
        return None

    def _pool_checkout(self, *_args: Any) -> None:
        return None


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """Database spans as children of the request's span, for this engine only."""
    tracer = trace.get_tracer("keel.db", __version__, provider)
    meter = otel_metrics.NoOpMeterProvider().get_meter("keel.db")
    usage = meter.create_up_down_counter("db.client.connections.usage")
    _SampledOnlyEngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]


def instrument_httpx_client(client: httpx.AsyncClient | httpx.Client, provider: Any) -> None:
    """For outgoing HTTP (webhooks, …): a client span and ``traceparent`` on the request."""
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)


def instrument_redis_client(client: Any, provider: Any) -> None:
    """Spans for one Redis client's commands."""
    RedisInstrumentor.instrument_client(client, tracer_provider=provider)

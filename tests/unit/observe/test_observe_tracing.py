"""Which exporter and sampler the settings give the tracer provider; the server span.

The server span comes from OpenTelemetry's ASGI middleware as Keel configures
it (:func:`keel.http.tracing.add_server_spans`); these tests drive a small
in-process app wired the same way as ``keel.http.pipeline.install`` does.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import StatusCode

from keel.http.trace import RequestContextMiddleware
from keel.http.tracing import EXCLUDED_URLS, add_server_spans, native_telemetry_off
from keel.observe.tracing import PresetTraceIds, build_tracer_provider
from keel.settings import Settings

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _exporters(settings: Settings) -> list[object]:
    provider = build_tracer_provider(settings)
    try:
        # Every processor is wrapped so that it sees redacted spans (span_redaction).
        processors = [p.inner for p in provider._active_span_processor._span_processors]
        return [
            processor._batch_processor._exporter
            for processor in processors
            if isinstance(processor, BatchSpanProcessor)
        ]
    finally:
        provider.shutdown()


def test_no_exporter_by_default() -> None:
    assert _exporters(Settings()) == []


def test_otlp_exporter_when_an_endpoint_is_set() -> None:
    settings = Settings(otel_endpoint="http://127.0.0.1:4318/v1/traces")
    [exporter] = _exporters(settings)
    assert isinstance(exporter, OTLPSpanExporter)


def test_sampling_ratio_reaches_the_sampler() -> None:
    provider = build_tracer_provider(Settings(otel_sampling_ratio=0.25))
    try:
        assert "0.25" in provider.sampler.get_description()
    finally:
        provider.shutdown()


def test_probe_urls_are_excluded_from_traces_but_api_urls_are_not() -> None:
    patterns = [re.compile(p) for p in EXCLUDED_URLS.split(",")]

    def excluded(url: str) -> bool:
        return any(p.search(url) for p in patterns)

    for path in ("/live", "/ready", "/health", "/metrics", "/version"):
        assert excluded(f"http://keel.test{path}")
    assert not excluded("http://keel.test/v1/recognitions")
    assert not excluded("http://keel.test/v1/health")


def _app(provider: TracerProvider) -> FastAPI:
    """Routes standing in for Keel's, behind the request context and the server span."""
    app = FastAPI(**native_telemetry_off())
    seen: list[trace.SpanContext] = []
    app.state.seen = seen

    @app.get("/live")
    async def live() -> dict[str, str]:
        seen.append(trace.get_current_span().get_span_context())
        return {"status": "pass"}

    @app.get("/v1/recognitions/{recognition_id}")
    async def recognition(recognition_id: str) -> Response:
        seen.append(trace.get_current_span().get_span_context())
        return Response(status_code=503 if recognition_id == "down" else 200)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_middleware(RequestContextMiddleware, identity_key=b"k" * 32)
    add_server_spans(app, provider)
    return app


async def _serve(
    path: str,
    *,
    traceparent: str | None = None,
    sampler: Sampler | None = None,
    ids: IdGenerator | None = None,
) -> tuple[list[ReadableSpan], list[trace.SpanContext], httpx.Response]:
    """One request through the app; (finished spans, span contexts the route saw, response).

    With ``ids`` a :class:`PresetTraceIds` (as Keel's provider has), the server-span
    step asks the sampler first; with plain random ids it takes the stock path.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=sampler or ParentBased(ALWAYS_ON), id_generator=ids or RandomIdGenerator()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = _app(provider)
    headers = {"user-agent": "probe/1"}
    if traceparent is not None:
        headers["traceparent"] = traceparent
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
            response = await client.get(path, headers=headers)
    finally:
        provider.shutdown()
    return list(exporter.get_finished_spans()), app.state.seen, response


@pytest.fixture(params=["stock", "sampler-first"])
def ids(request: pytest.FixtureRequest) -> IdGenerator:
    """Every server-span behaviour holds on both paths of :class:`ServerSpans`."""
    return PresetTraceIds() if request.param == "sampler-first" else RandomIdGenerator()


@pytest.mark.parametrize("path", ["/live", "/metrics", "/health"])
async def test_probes_get_no_server_span(path: str, ids: IdGenerator) -> None:
    spans, seen, _ = await _serve(path, traceparent=f"00-{TRACE_ID}-b7ad6b7169203331-01", ids=ids)
    assert spans == []
    assert all(not context.is_valid for context in seen)


async def test_the_server_span_joins_the_incoming_trace_named_by_its_route(
    ids: IdGenerator,
) -> None:
    spans, [inner], response = await _serve(
        "/v1/recognitions/abc", traceparent=f"00-{TRACE_ID}-b7ad6b7169203331-01", ids=ids
    )
    [span] = spans  # no per-message send/receive spans
    assert span.kind is trace.SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert inner.span_id == span.context.span_id  # current while the route runs
    assert span.name == "GET /v1/recognitions/{recognition_id}"
    assert dict(span.attributes or {})["http.route"] == "/v1/recognitions/{recognition_id}"
    assert span.status.status_code is StatusCode.UNSET
    span_id = format(span.context.span_id, "016x")
    assert response.headers["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"


async def test_an_invalid_traceparent_starts_a_new_trace(ids: IdGenerator) -> None:
    [span], _, response = await _serve(
        "/v1/recognitions/abc", traceparent=f"00-{TRACE_ID}-0000000000000000-01", ids=ids
    )
    assert span.parent is None
    assert format(span.context.trace_id, "032x") != TRACE_ID
    assert response.headers["traceparent"].split("-")[1] == format(span.context.trace_id, "032x")


async def test_an_unsampled_parent_yields_ids_but_no_recorded_span(ids: IdGenerator) -> None:
    spans, [inner], response = await _serve(
        "/v1/recognitions/abc", traceparent=f"00-{TRACE_ID}-b7ad6b7169203331-00", ids=ids
    )
    assert spans == []
    assert inner.is_valid
    assert format(inner.trace_id, "032x") == TRACE_ID
    assert not inner.trace_flags.sampled
    assert response.headers["traceparent"].endswith("-00")


async def test_a_5xx_and_an_unhandled_exception_mark_the_span_as_an_error(
    ids: IdGenerator,
) -> None:
    [answered], _, response = await _serve("/v1/recognitions/down", ids=ids)
    assert response.status_code == 503
    assert answered.status.status_code is StatusCode.ERROR
    [failed], _, response = await _serve("/v1/boom", ids=ids)
    assert response.status_code == 500
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]


async def test_an_unsampled_new_trace_still_gets_ids_for_the_logs_and_the_answer(
    ids: IdGenerator,
) -> None:
    spans, [inner], response = await _serve("/v1/recognitions/abc", sampler=ALWAYS_OFF, ids=ids)
    assert spans == []
    assert inner.is_valid
    assert not inner.trace_flags.sampled
    trace_id, span_id = format(inner.trace_id, "032x"), format(inner.span_id, "016x")
    flags = f"{int(inner.trace_flags):02x}"
    assert response.headers["traceparent"] == f"00-{trace_id}-{span_id}-{flags}"


class EvenTraceIds(Sampler):
    """Samples a trace iff its id is even, and remembers every id it was asked about."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any, **kw: Any) -> Any:
        self.asked.append(trace_id)
        decision = Decision.RECORD_AND_SAMPLE if trace_id % 2 == 0 else Decision.DROP
        return SamplingResult(decision)

    def get_description(self) -> str:
        return "EvenTraceIds"


async def test_a_new_trace_sampled_first_is_recorded_under_the_id_it_was_sampled_on() -> None:
    sampler = EvenTraceIds()
    recorded: list[int] = []
    for _ in range(16):  # about half of them sampled
        spans, [inner], response = await _serve(
            "/v1/recognitions/abc", sampler=sampler, ids=PresetTraceIds()
        )
        recorded += [span.context.trace_id for span in spans]
        flags = int(response.headers["traceparent"].rsplit("-", 1)[1], 16)
        assert flags & 1 == (inner.trace_id % 2 == 0)
    # Each id the step drew and the sampler accepted became a span (no second draw).
    assert sorted(recorded) == sorted({i for i in sampler.asked if i % 2 == 0})
    assert recorded, "no trace sampled in 16 tries of a fair coin"

"""Which exporter and sampler the settings give the tracer provider; the server span."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import StatusCode
from starlette.types import Message, Receive, Scope, Send

from keel.observe.server_spans import ServerSpanMiddleware
from keel.observe.tracing import build_tracer_provider
from keel.settings import Settings

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _exporters(settings: Settings) -> list[object]:
    provider = build_tracer_provider(settings)
    try:
        processors = provider._active_span_processor._span_processors
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


async def _serve(
    path: str,
    *,
    traceparent: str | None = None,
    status: int = 200,
    fail: bool = False,
    route: str | None = None,
) -> tuple[list[ReadableSpan], trace.SpanContext | None]:
    """One request through the middleware around a stub app; (finished spans, inner context)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[trace.SpanContext] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(trace.get_current_span().get_span_context())
        if route is not None:
            scope["route"] = SimpleNamespace(path=route)
        if fail:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    headers = [(b"host", b"keel.test"), (b"user-agent", b"probe/1")]
    if traceparent is not None:
        headers.append((b"traceparent", traceparent.encode()))
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "scheme": "http",
        "http_version": "1.1",
        "headers": headers,
        "server": ("keel.test", 80),
        "client": ("10.0.0.7", 5000),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(_message: Message) -> None:
        return None

    middleware = ServerSpanMiddleware(app, tracer_provider=provider)
    try:
        if fail:
            with pytest.raises(RuntimeError):
                await middleware(scope, receive, send)
        else:
            await middleware(scope, receive, send)
    finally:
        provider.shutdown()
    return list(exporter.get_finished_spans()), seen[0] if seen else None


@pytest.mark.parametrize("path", ["/live", "/ready", "/health", "/metrics", "/version"])
async def test_probes_get_no_server_span(path: str) -> None:
    spans, inner = await _serve(path)
    assert spans == []
    assert inner is not None
    assert not inner.is_valid


@pytest.mark.parametrize("path", ["/v1/recognitions", "/v1/health"])
async def test_api_requests_get_a_current_server_span(path: str) -> None:
    spans, inner = await _serve(path)
    [span] = spans
    assert span.kind is trace.SpanKind.SERVER
    assert inner is not None
    assert inner.span_id == span.context.span_id


async def test_the_span_joins_the_incoming_trace_and_carries_http_attributes() -> None:
    spans, _ = await _serve(
        "/v1/recognitions/abc",
        traceparent=f"00-{TRACE_ID}-b7ad6b7169203331-01",
        route="/v1/recognitions/{recognition_id}",
    )
    [span] = spans
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert span.name == "GET /v1/recognitions/{recognition_id}"
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/v1/recognitions/{recognition_id}"
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/v1/recognitions/abc"
    assert attributes["http.response.status_code"] == 200
    assert attributes["user_agent.original"] == "probe/1"
    assert "10.0.0.7" not in str(attributes)  # no raw client address
    assert span.status.status_code is StatusCode.UNSET


async def test_an_unsampled_parent_yields_ids_but_no_recorded_span() -> None:
    spans, inner = await _serve(
        "/v1/recognitions", traceparent=f"00-{TRACE_ID}-b7ad6b7169203331-00"
    )
    assert spans == []
    assert inner is not None
    assert inner.is_valid
    assert format(inner.trace_id, "032x") == TRACE_ID
    assert not inner.trace_flags.sampled


async def test_a_5xx_and_an_unhandled_exception_mark_the_span_as_an_error() -> None:
    [answered], _ = await _serve("/v1/recognitions", status=503)
    assert answered.status.status_code is StatusCode.ERROR
    assert dict(answered.attributes or {})["http.response.status_code"] == 503
    [failed], _ = await _serve("/v1/recognitions", fail=True)
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["http.response.status_code"] == 500
    assert [event.name for event in failed.events] == ["exception"]

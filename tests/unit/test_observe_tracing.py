"""Which exporter and sampler the settings give the tracer provider."""

from __future__ import annotations

import re

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from keel.observe.tracing import EXCLUDED_URLS, build_tracer_provider
from keel.settings import Settings


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


def test_probe_urls_are_excluded_from_traces_but_api_urls_are_not() -> None:
    patterns = [re.compile(p) for p in EXCLUDED_URLS.split(",")]

    def excluded(url: str) -> bool:
        return any(p.search(url) for p in patterns)

    for path in ("/live", "/ready", "/health", "/metrics", "/version"):
        assert excluded(f"http://keel.test{path}")
    assert not excluded("http://keel.test/v1/recognitions")
    assert not excluded("http://keel.test/v1/health")

"""Spans leave the process redacted: every exporter sees them through :class:`Redactor`.

Spans carry text Keel does not choose: a recorded exception's message, the URL
of a request, a query string, headers when OpenTelemetry is told to capture
them. :class:`RedactingTracerProvider` wraps every span processor added to it
— Keel's OTLP exporter, or a test's in-memory one — so each receives, at the
end of a span, a copy whose name, attributes, event attributes and status
description went through the same redaction as log lines, with every string
bounded. A span with nothing to change is passed on as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import Status
from opentelemetry.util.types import Attributes

from keel.observe.log_lines import MAX_EXCEPTION_CHARS, truncate
from keel.redaction import REDACTED, Redactor, is_sensitive_key


class RedactingSpanProcessor(SpanProcessor):
    """Hands ``inner`` a redacted copy of each ended span."""

    def __init__(self, inner: SpanProcessor, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        self.inner._on_ending(span)  # the SDK's own hook, passed through

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(redacted_span(span, self.redactor))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RedactingTracerProvider(TracerProvider):
    """A tracer provider whose span processors all see redacted spans."""

    def __init__(self, *, redactor: Redactor, **options: Any) -> None:
        self.redactor = redactor
        super().__init__(**options)

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(RedactingSpanProcessor(span_processor, self.redactor))


def redacted_span(span: ReadableSpan, redactor: Redactor) -> ReadableSpan:
    """``span`` itself when nothing in it needs redacting or bounding, else a copy."""
    name = redactor.text(span.name)
    attributes = _attributes(span.attributes, redactor)
    events = [
        Event(event.name, _attributes(event.attributes, redactor), event.timestamp)
        for event in span.events
    ]
    status = span.status
    if status.description:
        status = Status(status.status_code, _text(status.description, redactor))
    unchanged = (
        name == span.name
        and attributes == dict(span.attributes or {})
        and all(
            new.attributes == dict(old.attributes or {})
            for new, old in zip(events, span.events, strict=True)
        )
        and status.description == span.status.description
    )
    if unchanged:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _attributes(attributes: Attributes, redactor: Redactor) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if is_sensitive_key(key.rsplit(".", 1)[-1]):
            safe[key] = REDACTED
        elif isinstance(value, str):
            safe[key] = _text(value, redactor)
        elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            safe[key] = tuple(
                _text(item, redactor) if isinstance(item, str) else item for item in value
            )
        else:
            safe[key] = value
    return safe


def _text(value: str, redactor: Redactor) -> str:
    return truncate(redactor.text(value), MAX_EXCEPTION_CHARS)

"""The server span of each HTTP request, started from an incoming W3C trace context.

Keel used OpenTelemetry's ASGI middleware for this. Profiled under the
observability benchmark it was the largest single cost of the stack: on every
request, sampled or not, it decoded every header, built the full attribute set,
resolved excluded URLs against a rebuilt ``scheme://host/path`` string and
wrapped ``send``. Keel needs a small part of it, so this middleware does that
part directly on the OpenTelemetry SDK tracer:

- W3C ``traceparent``/``tracestate`` (and baggage) are read by the globally
  configured OpenTelemetry propagator (``OTEL_PROPAGATORS``; W3C by default); an
  invalid header starts a new trace, as the spec says;
- one ``SERVER`` span per request, current while the app runs, so database and
  outgoing-call spans are its children and the access line carries its ids;
- HTTP semantic-convention attributes (stable names), the span named
  ``METHOD /route/{template}`` from the route the router matched, and 5xx or an
  unhandled exception marks it as an error;
- no per-message ``send``/``receive`` spans; probes and ``/metrics`` untraced.

When the sampler drops the request, the span is the SDK's non-recording one:
it still has ids (for the log line and the response's ``traceparent``) but no
attribute is computed and ``send`` is not wrapped. The client address is not
recorded: Keel keeps raw IPs out of its telemetry, as out of its logs.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel import __version__
from keel.observe.routes_info import UNMATCHED, is_operational, route_template

Headers = list[tuple[bytes, bytes]]


class _HeaderGetter(Getter[Headers]):
    """Reads one header from the raw ASGI list, decoding only the one asked for."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for name, value in carrier if name == wanted]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


_GETTER = _HeaderGetter()


def _header(headers: Iterable[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


def request_attributes(scope: Scope) -> dict[str, AttributeValue]:
    """HTTP semantic-convention attributes of the request (only for recorded spans)."""
    attributes: dict[str, AttributeValue] = {
        "http.request.method": scope["method"],
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope["path"],
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    server = scope.get("server")
    if server:
        attributes["server.address"] = str(server[0])
        if server[1] is not None:
            attributes["server.port"] = int(server[1])
    user_agent = _header(scope.get("headers", ()), b"user-agent")
    if user_agent is not None:
        attributes["user_agent.original"] = user_agent
    return attributes


def _finish(span: trace.Span, scope: Scope, status: int | None) -> None:
    """Name the span by its route template and record the outcome (recorded spans only)."""
    route = route_template(scope)
    if route != UNMATCHED:
        span.set_attribute("http.route", route)
        span.update_name(f"{scope['method']} {route}")
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))


class ServerSpanMiddleware:
    """Outermost middleware: the request's server span, current for everything inside."""

    def __init__(self, app: ASGIApp, *, tracer_provider: TracerProvider) -> None:
        self.app = app
        self.tracer = tracer_provider.get_tracer("keel.http", __version__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_operational(scope["path"]):
            await self.app(scope, receive, send)
            return
        parent = propagate.extract(scope["headers"], getter=_GETTER)
        span = self.tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            if not span.is_recording():
                await self.app(scope, receive, send)  # unsampled: no span work at all
                return
            await self._recorded(span, scope, receive, send)
        finally:
            span.end()
            otel_context.detach(token)

    async def _recorded(self, span: trace.Span, scope: Scope, receive: Receive, send: Send) -> None:
        span.set_attributes(request_attributes(scope))
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception as error:
            # Unhandled: the server turns it into a 500 outside this middleware.
            _finish(span, scope, status if status is not None else 500)
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        _finish(span, scope, status)

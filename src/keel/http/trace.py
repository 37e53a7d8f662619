"""The outermost Keel middleware: request id, trace ids in every log line, the access line.

It runs inside OpenTelemetry's ASGI middleware (which starts the server span
from an incoming W3C ``traceparent``), so here the current span already holds
the trace id. For the length of the request, the request id, trace id and span
id are bound into structlog's contextvars; every log line written while
serving the request carries them. When the response starts, the server span
gets its route template as name and ``http.route``. When the response ends,
one access line is written: method, route template, status, duration, ids, and
the user and organisation as keyed hashes — never raw emails, tokens, IPs or
bodies. Operational endpoints (probes, ``/metrics``) log at debug, so they
stay out of the info-level access log.

Every response carries ``X-Request-Id`` and ``traceparent``. Probes and
``/metrics`` are not traced (no span), so theirs continues the caller's trace id
with a fresh span id, not sampled (``-00``), or starts a new one. A ``500`` is
sent by Starlette's outermost error middleware, outside this one, so the headers
are also left in the scope for that handler (:data:`keel.http.problems.RESPONSE_HEADERS`).
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import structlog
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.http.problems import RESPONSE_HEADERS
from keel.http.routes_info import UNMATCHED, is_operational, route_template
from keel.http.state import peek
from keel.keyed_hash import keyed_hash
from keel.observe.identity import LOG_HASH_LENGTH

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_INCOMING_TRACEPARENT = re.compile(rb"^[ \t]*00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}[ \t]*$")
_ZERO_TRACE_ID = b"0" * 32

access_log = structlog.get_logger("keel.access")


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _VALID_REQUEST_ID.match(value) else None
    return None


def new_request_id() -> str:
    """128 random bits as hex; a correlation id, not a secret, so no system entropy call."""
    return f"{random.getrandbits(128):032x}"


def current_trace_ids() -> tuple[str | None, str | None, str | None]:
    """(trace id, span id, traceparent) of the current span, or Nones outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None, None
    trace_id = format(context.trace_id, "032x")
    span_id = format(context.span_id, "016x")
    traceparent = f"00-{trace_id}-{span_id}-{int(context.trace_flags):02x}"
    return trace_id, span_id, traceparent


def untraced_ids(scope: Scope) -> tuple[str, str, str]:
    """(trace id, span id, traceparent) for a request without a span (probes, ``/metrics``).

    The caller's trace id when it sent a valid ``traceparent``, else a new one; a
    fresh span id; flags ``00``: nothing was recorded under it.
    """
    trace_id = None
    for name, value in scope["headers"]:
        if name == b"traceparent":
            found = _INCOMING_TRACEPARENT.match(value)
            if found is not None and found[1] != _ZERO_TRACE_ID:
                trace_id = found[1].decode()
            break
    trace_id = trace_id or f"{random.getrandbits(128) | 1:032x}"
    span_id = f"{random.getrandbits(64) | 1:016x}"
    return trace_id, span_id, f"00-{trace_id}-{span_id}-00"


def name_server_span(scope: Scope) -> None:
    """``GET /v1/recognitions/{recognition_id}``: the server span named by its route template.

    OpenTelemetry's ASGI middleware starts the span before routing, so it can
    only name it by the method; the template is known once the router matched.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        return
    route = route_template(scope)
    if route != UNMATCHED:
        span.set_attribute("http.route", route)
        span.update_name(f"{scope['method']} {route}")


# Enough for every active user and organisation of a busy instance; cleared when full.
_HASH_CACHE_SIZE = 10_000


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, identity_key: bytes) -> None:
        self.app = app
        self.identity_key = identity_key
        self._hashes: dict[str, str] = {}

    def _pseudonym(self, identifier: str) -> str:
        """The keyed hash of an id, remembered: two HMACs per access line add up."""
        hashed = self._hashes.get(identifier)
        if hashed is None:
            if len(self._hashes) >= _HASH_CACHE_SIZE:
                self._hashes.clear()
            hashed = self._hashes[identifier] = keyed_hash(
                self.identity_key, identifier, length=LOG_HASH_LENGTH
            )
        return hashed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = incoming_request_id(scope) or new_request_id()
        trace_id, span_id, traceparent = current_trace_ids()
        if traceparent is None:
            trace_id, span_id, traceparent = untraced_ids(scope)
        status = 500
        extra_headers = [
            (b"x-request-id", request_id.encode()),
            (b"traceparent", traceparent.encode()),
        ]
        scope[RESPONSE_HEADERS] = extra_headers  # for the 500 sent outside this middleware

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                name_server_span(scope)  # before the body: the span ends with the last chunk
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        # bind/reset rather than the bound_contextvars() context manager: same effect,
        # without a generator-based context manager on every request.
        tokens = structlog.contextvars.bind_contextvars(
            request_id=request_id, trace_id=trace_id, span_id=span_id
        )
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            self._log(scope, status, time.perf_counter() - started)
            structlog.contextvars.reset_contextvars(**tokens)

    def _log(self, scope: Scope, status: int, duration: float) -> None:
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": route_template(scope),
            "status": status,
            "duration_ms": round(duration * 1000, 3),
        }
        state = peek(scope)
        principal = state.principal if state is not None else None
        if principal is not None:
            fields["user"] = self._pseudonym(principal.user_id)
            fields["org"] = self._pseudonym(principal.org_id)
        if is_operational(scope["path"]):
            access_log.debug("http_request", **fields)
        else:
            access_log.info("http_request", **fields)

"""The access line as written: every field, the request's ids, people hashed, secrets redacted.

Each test runs ``RequestContextMiddleware`` over a small ASGI app with Keel's own
logging configured into a buffer, in both formats, and reads the written line back.
"""

from __future__ import annotations

import ast
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import SecretStr
from starlette.types import Message, Receive, Scope, Send

from keel.domain.principal import Plan, Principal, Role
from keel.http.state import state_of
from keel.http.trace import RequestContextMiddleware
from keel.keyed_hash import keyed_hash
from keel.observe.identity import LOG_HASH_LENGTH
from keel.observe.logs import configure_logging, flush_logs
from keel.redaction import REDACTED
from keel.settings import Settings

SECRET_KEY = "access-line-secret-key-0123456789abcdef"
TOKEN = "keel_Zq9" + "T" * 40
IDENTITY_KEY = b"i" * 32
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
PRINCIPAL = Principal(
    user_id="user-0001-alice",
    org_id="org-0001-acme",
    role=Role.MEMBER,
    token_id="tok-1",
    plan=Plan.TEAM,
)
FIELDS = {
    "timestamp",
    "level",
    "event",
    "method",
    "route",
    "status",
    "duration_ms",
    "user",
    "org",
    "request_id",
    "trace_id",
    "span_id",
}
# key=value, the value as is or as a Python string literal (when it holds spaces, quotes, …).
_PAIR = re.compile(r"""(\w+)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""")
_CONSOLE = re.compile(r"^(?P<timestamp>\S+) \[(?P<level>\w+) *\] (?P<event>\S+) +(?P<rest>.*)$")


def configure(buffer: io.StringIO, log_format: str, log_level: str = "info") -> None:
    settings = Settings(
        log_format=log_format, log_level=log_level, secret_key=SecretStr(SECRET_KEY)
    )
    configure_logging(settings, stream=buffer)


@pytest.fixture
def buffer() -> Iterator[io.StringIO]:
    written = io.StringIO()
    yield written
    structlog.contextvars.clear_contextvars()
    configure_logging(Settings())


def parsed(line: str, log_format: str) -> dict[str, Any]:
    """A written line back as fields (console values as the text they were written as)."""
    if log_format == "json":
        fields: dict[str, Any] = json.loads(line)
        return fields
    match = _CONSOLE.match(line)
    assert match is not None, line
    fields = {key: match[key] for key in ("timestamp", "level", "event")}
    for key, value in _PAIR.findall(match["rest"]):
        fields[key] = ast.literal_eval(value) if value[:1] in "'\"" else value
    return fields


def access_lines(buffer: io.StringIO, log_format: str) -> list[dict[str, Any]]:
    assert flush_logs()
    lines = [parsed(line, log_format) for line in buffer.getvalue().splitlines()]
    return [line for line in lines if line.get("event") == "http_request"]


def endpoint(**bound: str) -> Any:
    """A route that authenticates ``PRINCIPAL`` and binds ``bound`` to the log context."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = SimpleNamespace(path="/v1/recognitions/{recognition_id}")
        state_of(scope).principal = PRINCIPAL
        structlog.contextvars.bind_contextvars(**bound)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def serve(app: Any, path: str = "/v1/recognitions/r-1") -> dict[bytes, bytes]:
    """One request through the middleware inside a span; the response's headers."""
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"x-request-id", b"req-42.a"), (b"authorization", f"Bearer {TOKEN}".encode())],
        "client": ("203.0.113.9", 5555),
    }
    started: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        started.extend([message] if message["type"] == "http.response.start" else [])

    span = NonRecordingSpan(
        SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(0x01))
    )
    attached = otel_context.attach(trace.set_span_in_context(span))
    try:
        await RequestContextMiddleware(app, identity_key=IDENTITY_KEY)(scope, receive, send)
    finally:
        otel_context.detach(attached)
    return dict(started[0]["headers"])


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_the_access_line_has_every_field_and_the_requests_ids(
    buffer: io.StringIO, log_format: str
) -> None:
    configure(buffer, log_format)
    headers = await serve(endpoint())
    [line] = access_lines(buffer, log_format)
    assert set(line) == FIELDS
    assert line["level"] == "info"
    assert line["method"] == "POST"
    assert line["route"] == "/v1/recognitions/{recognition_id}"
    assert str(line["status"]) == "201"
    assert float(line["duration_ms"]) >= 0
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None
    assert line["request_id"] == "req-42.a" == headers[b"x-request-id"].decode()
    assert line["trace_id"] == format(TRACE_ID, "032x")
    assert line["span_id"] == format(SPAN_ID, "016x")
    assert headers[b"traceparent"].decode() == f"00-{line['trace_id']}-{line['span_id']}-01"


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_the_access_line_names_people_only_by_keyed_hashes(
    buffer: io.StringIO, log_format: str
) -> None:
    configure(buffer, log_format)
    await serve(endpoint())
    [line] = access_lines(buffer, log_format)
    assert line["user"] == keyed_hash(IDENTITY_KEY, PRINCIPAL.user_id, length=LOG_HASH_LENGTH)
    assert line["org"] == keyed_hash(IDENTITY_KEY, PRINCIPAL.org_id, length=LOG_HASH_LENGTH)
    output = buffer.getvalue()
    for raw in (PRINCIPAL.user_id, PRINCIPAL.org_id, TOKEN, "203.0.113.9"):
        assert raw not in output


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_secrets_bound_while_serving_are_redacted_in_the_access_line(
    buffer: io.StringIO, log_format: str
) -> None:
    configure(buffer, log_format)
    await serve(
        endpoint(
            authorization="opaque-credential-value",  # secret by its name
            upstream=f"calling with token={TOKEN}",  # a token in text
            detail=f"the key is {SECRET_KEY}",  # the service's own secret
        )
    )
    [line] = access_lines(buffer, log_format)
    assert line["authorization"] == REDACTED
    assert REDACTED in line["upstream"]
    assert REDACTED in line["detail"]
    output = buffer.getvalue()
    for secret in ("opaque-credential-value", TOKEN, SECRET_KEY):
        assert secret not in output


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_the_level_filter_applies_to_the_access_line(
    buffer: io.StringIO, log_format: str
) -> None:
    configure(buffer, log_format, log_level="warning")
    await serve(endpoint())
    assert access_lines(buffer, log_format) == []
    configure(buffer, log_format, log_level="info")
    await serve(endpoint(), path="/live")  # operational: at debug
    assert access_lines(buffer, log_format) == []
    configure(buffer, log_format, log_level="debug")
    await serve(endpoint(), path="/live")
    [line] = access_lines(buffer, log_format)
    assert line["level"] == "debug"

"""RFC 9457 problem details: the one place errors become HTTP.

Every error response Keel sends — validation, 401, 404, 405, 413, 415, 429,
503 and unexpected exceptions — is ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail`` and ``instance``, plus extension members
where they help a client (``errors`` for validation, ``limit`` and so on).
Unexpected exceptions answer a generic body and log the traceback; internals
never leave the process, and every text in a body is redacted
(:mod:`keel.redaction`): credentials a client or a library put in a
message are not echoed back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from keel.api.text import printable
from keel.db.failures import as_unavailable
from keel.errors import KeelError
from keel.redaction import Redactor

log = structlog.get_logger(__name__)
# The service's own secrets never reach an error's text; this catches what a client or a
# library put there (a token echoed in a path, a URL with its password in a message).
_REDACTOR = Redactor()

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://keel.dev/problems/"
# Where the request-context middleware leaves the headers every response carries
# (X-Request-Id, traceparent): a 500 is sent by Starlette's outermost error
# middleware, outside it, so the handler adds them itself.
RESPONSE_HEADERS = "keel.response_headers"

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    416: ("range-not-satisfiable", "Range not satisfiable"),
    422: ("validation", "Invalid input"),
    429: ("rate-limited", "Too many requests"),
    503: ("dependency-unavailable", "Service temporarily unavailable"),
}


class Problem(BaseModel):
    """The body of every error response (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str


class ProblemResponse(JSONResponse):
    """A problem body that always encodes: ASCII-escaped, so text a client sent
    (a field name with an unpaired surrogate, say) can never make the error
    response itself fail."""

    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def problem_type(slug: str) -> str:
    return TYPE_BASE + slug


def problem_response(
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    instance: str,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {key: _redacted(value) for key, value in (extensions or {}).items()}
    body.update(
        type=problem_type(slug),
        title=title,
        status=status,
        detail=_REDACTOR.text(detail),
        instance=_REDACTOR.text(instance),
    )
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def _redacted(value: Any) -> Any:
    """An extension member's text through the redactor (``errors`` entries included)."""
    if isinstance(value, str):
        return _REDACTOR.text(value)
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    return value


def from_error(error: KeelError, instance: str) -> Response:
    return problem_response(
        status=error.status,
        slug=error.slug,
        title=error.title,
        detail=error.detail,
        instance=instance,
        headers=error.headers,
        extensions=error.extensions,
    )


def _instance(request: Request) -> str:
    return request.url.path


async def _keel_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, KeelError)
    if error.status >= 500:
        log.warning("request_refused", problem=error.slug, detail=error.detail)
    return from_error(error, _instance(request))


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    errors = [
        {
            # A location can hold a key the client sent: shown, never echoed raw.
            "field": printable(".".join(str(part) for part in item.get("loc", ())), "\ufffd"),
            "message": item.get("msg", "invalid"),
            "code": item.get("type", "invalid"),
        }
        for item in error.errors()
    ]
    malformed = [e for e in errors if e["code"] == "json_invalid"]
    if malformed:
        # A body that is not JSON at all is a syntax error: 400 (RFC 9110 §15.5.1), where
        # 422 is for well-formed content that cannot be processed (§15.5.21).
        return problem_response(
            status=400,
            slug="bad-request",
            title="Bad request",
            detail="the request body is not valid JSON",
            instance=_instance(request),
            extensions={"errors": malformed},
        )
    return problem_response(
        status=422,
        slug="validation",
        title="Invalid input",
        detail="the request has invalid fields: " + ", ".join(e["field"] for e in errors),
        instance=_instance(request),
        extensions={"errors": errors},
    )


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    slug, title = _HTTP_SLUGS.get(error.status_code, ("http-error", "HTTP error"))
    detail = error.detail if isinstance(error.detail, str) else title
    if error.status_code == 404 and detail == "Not Found":
        detail = "no resource at this path"
    headers = dict(error.headers or {})
    if error.status_code == 405:
        allowed = _allowed_methods(request)
        detail = f"{request.method} is not allowed on this path; use {', '.join(allowed)}"
        headers["Allow"] = ", ".join(allowed)
    return problem_response(
        status=error.status_code,
        slug=slug,
        title=title,
        detail=detail,
        instance=_instance(request),
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return sorted(allowed)


def for_exception(error: BaseException, instance: str) -> Response:
    """The answer to an exception nothing below handled: the last resort of every path.

    A Keel error answers as itself; an error that means the database cannot serve
    (:func:`keel.db.failures.is_unavailable`: SQLSTATE class 08, 57P0x, 53, a lost
    connection, a pool timeout, …) answers ``503 database-unavailable`` with
    ``Retry-After``, wherever it was raised — a route, a middleware, the moment a
    response starts; anything else is a bug: ``500``, with its traceback logged.
    """
    if not isinstance(error, KeelError):
        unavailable = as_unavailable(error)
        if unavailable is not None:
            log.warning(
                "request_refused",
                problem=unavailable.slug,
                detail=unavailable.detail,
                error_type=type(error).__name__,
            )
            return from_error(unavailable, instance)
        log.exception(
            "unhandled_exception", path=instance, error_type=type(error).__name__, exc_info=error
        )
        # Answered here, the exception never reaches the tracing middleware: the server
        # span records it (the span processors see it redacted and bounded, like a log line).
        span = trace.get_current_span()
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        return problem_response(
            status=500,
            slug="internal",
            title="Internal error",
            detail="something went wrong on our side; it has been logged",
            instance=instance,
        )
    if error.status >= 500:
        log.warning("request_refused", problem=error.slug, detail=error.detail)
    return from_error(error, instance)


async def _unexpected(request: Request, error: Exception) -> Response:
    response = for_exception(error, _instance(request))
    # Starlette sends this answer outside Keel's middleware: the trace context headers
    # the request-context middleware left in the scope are added here.
    for name, value in request.scope.get(RESPONSE_HEADERS, ()):
        key = name.decode("latin-1")
        if key not in response.headers:
            response.headers[key] = value.decode("latin-1")
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(KeelError, _keel_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting each error status as problem+json."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        _, title = _HTTP_SLUGS.get(status, ("", "Error"))
        documented[status] = {
            "description": title,
            "model": Problem,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return documented

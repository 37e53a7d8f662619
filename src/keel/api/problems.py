"""RFC 9457 problem details: the one place errors become HTTP.

Every error response Keel sends — validation, 401, 404, 405, 413, 415, 429,
503 and unexpected exceptions — is ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail`` and ``instance``, plus extension members
where they help a client (``errors`` for validation, ``limit`` and so on).
Unexpected exceptions answer a generic body and log the traceback; internals
never leave the process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from keel.api.text import printable
from keel.errors import KeelError

log = structlog.get_logger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://keel.dev/problems/"

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
    body: dict[str, Any] = dict(extensions or {})
    body.update(
        type=problem_type(slug), title=title, status=status, detail=detail, instance=instance
    )
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


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


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled_exception", path=request.url.path, error_type=type(error).__name__)
    return problem_response(
        status=500,
        slug="internal",
        title="Internal error",
        detail="something went wrong on our side; it has been logged",
        instance=_instance(request),
    )


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

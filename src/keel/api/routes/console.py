"""``/ops``: the operator console's page, its assets and its one data endpoint.

The page and its script are static and public (they hold no data); ``/ops/state``
answers only to the operator token. The page sends the token from session storage,
so it never appears in a URL the server sees or logs (it arrives in the URL
fragment, which browsers do not send).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.responses import JSONResponse, Response

from keel.api.services import services_of
from keel.console.access import is_operator
from keel.console.state import ConsoleSources, snapshot
from keel.errors import Unauthenticated
from keel.http.facts import RouteFacts, route
from keel.http.problems import problem_responses

router = APIRouter(prefix="/ops", tags=["operations"])

_ASSETS = files("keel.console") / "assets"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_MEDIA_TYPES = {
    "ops.html": "text/html; charset=utf-8",
    "ops.js": "text/javascript",
    "ops.css": "text/css",
}


def _asset(name: str) -> Response:
    body = (_ASSETS / name).read_bytes()
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(body, media_type=_MEDIA_TYPES[name], headers=headers)


def _operator(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    configured = services_of(request).settings.ops_token_sha256
    if not is_operator(authorization, configured):
        raise Unauthenticated("the operator console needs the operator token")


@route(router.get, "", RouteFacts("ops.page"), include_in_schema=False)
async def page() -> Response:
    return _asset("ops.html")


@route(router.get, "/ops.js", RouteFacts("ops.page"), include_in_schema=False)
async def script() -> Response:
    return _asset("ops.js")


@route(router.get, "/ops.css", RouteFacts("ops.page"), include_in_schema=False)
async def stylesheet() -> Response:
    return _asset("ops.css")


@route(
    router.get,
    "/state",
    RouteFacts("ops.state"),
    dependencies=[Depends(_operator)],
    summary="The operator console's snapshot (operator token)",
    responses={
        200: {
            "description": "readiness, jobs, breakers, breaches, noisy "
            "neighbours, deployments; unreadable sections listed in errors"
        },
        **problem_responses(401),
    },
)
async def state(request: Request) -> JSONResponse:
    services = services_of(request)
    sources = ConsoleSources(
        settings=services.settings,
        database=services.database,
        health=services.observe.health,
        breakers=services.dependencies.registry,
        auditor=services.audit,
        clock=services.clock,
    )
    body: dict[str, Any] = await snapshot(sources)
    return JSONResponse(body, headers={"Cache-Control": "no-store", **_SECURITY_HEADERS})

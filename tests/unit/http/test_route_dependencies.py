"""The routes' FastAPI dependencies: each one declared does work the route needs.

FastAPI solves every declared dependency again on every request, so one that
only documents the bearer scheme costs each authenticated request a nested
solve and a second parse of ``Authorization``; the principal's own dependency
documents the scheme instead (the OpenAPI snapshot keeps the document itself), and
a writing route may take principal, services and client address as one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from starlette.requests import Request

from keel.api.dependencies import BEARER_SCHEME, require_principal, require_writer
from keel.domain.principal import Plan, Principal, Role
from keel.errors import Unauthenticated
from keel.http.routes import ROUTERS
from keel.http.state import state_of

ALICE = Principal("user-1", "org-1", Role.MEMBER, "token-1", Plan.TEAM)


def _graph(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _graph(sub)


def _routes() -> list[APIRoute]:
    return [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def test_the_caller_dependency_is_the_only_security_scheme_and_has_no_dependency() -> None:
    for route in _routes():  # every /v1 route is authenticated
        schemes = [d for d in _graph(route.dependant) if isinstance(d.call, SecurityBase)]
        assert len(schemes) == 1, route.path
        assert schemes[0].call in (require_principal, require_writer), route.path
        assert schemes[0].dependencies == [], route.path
    assert require_principal.scheme_name == require_writer.scheme_name == BEARER_SCHEME
    assert require_principal.model == require_writer.model  # one scheme in the document


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/exports", "POST"),
        ("/v1/recognitions", "POST"),
        ("/v1/recognitions/{recognition_id}", "DELETE"),
    ],
)
def test_a_route_taking_a_writer_solves_one_dependency(path: str, method: str) -> None:
    [writing] = [r for r in _routes() if r.path == path and method in r.methods]
    assert [d.call for d in writing.dependant.dependencies] == [require_writer]


def _request(
    *,
    client: tuple[str, int] | None = None,
    services: object = None,
    principal: Principal | None = None,
) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    scope = {"type": "http", "method": "GET", "path": "/v1/x", "headers": [], "app": app}
    if client is not None:
        scope["client"] = client
    if principal is not None:
        state_of(scope).principal = principal
    return Request(scope)


async def test_the_principal_is_the_one_the_authentication_step_left() -> None:
    request = _request()
    state_of(request.scope).principal = ALICE
    assert await require_principal(request) is ALICE


async def test_the_writer_is_the_principal_the_services_and_the_client_address() -> None:
    services = object()
    request = _request(client=("203.0.113.9", 4711), services=services)
    state_of(request.scope).principal = ALICE
    writer = await require_writer(request)
    assert (writer.principal, writer.services, writer.ip) == (ALICE, services, "203.0.113.9")
    assert (await require_writer(_request(principal=ALICE))).ip is None


@pytest.mark.parametrize("dependency", [require_principal, require_writer])
@pytest.mark.parametrize("with_state", [False, True])
async def test_a_request_left_anonymous_is_refused_as_unauthenticated(
    dependency: Callable[[Request], Awaitable[object]], with_state: bool
) -> None:
    request = _request()
    if with_state:
        state_of(request.scope)  # a state without a principal: no token was sent
    with pytest.raises(Unauthenticated):
        await dependency(request)

"""The routes' FastAPI dependencies: each one declared does work the route needs.

FastAPI solves every declared dependency again on every request, so one that
only documents the bearer scheme costs each authenticated request a nested
solve and a second parse of ``Authorization``; the principal's own dependency
documents the scheme instead (the OpenAPI snapshot keeps the document itself).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from starlette.requests import Request

from keel.api.dependencies import BEARER_SCHEME, require_principal
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


def test_the_principal_dependency_is_the_only_security_scheme_and_has_no_dependency() -> None:
    for route in _routes():  # every /v1 route is authenticated
        schemes = [d for d in _graph(route.dependant) if isinstance(d.call, SecurityBase)]
        assert [d.call for d in schemes] == [require_principal], route.path
        assert schemes[0].dependencies == [], route.path
    assert require_principal.scheme_name == BEARER_SCHEME


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/v1/x", "headers": []})


async def test_the_principal_is_the_one_the_authentication_step_left() -> None:
    request = _request()
    state_of(request.scope).principal = ALICE
    assert await require_principal(request) is ALICE


@pytest.mark.parametrize("with_state", [False, True])
async def test_a_request_left_anonymous_is_refused_as_unauthenticated(with_state: bool) -> None:
    request = _request()
    if with_state:
        state_of(request.scope)  # a state without a principal: no token was sent
    with pytest.raises(Unauthenticated):
        await require_principal(request)

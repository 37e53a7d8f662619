"""What one middleware hands the next: a typed record of the request so far.

Each step of the pipeline fills in what it learnt — the matched route
(shedding, or whichever step first needs it), the principal (authentication),
whether the answer is an idempotent replay (the replay step), whether the key
lookup found no row, the idempotency claim the route stores its outcome under
— in one :class:`RequestState`, kept under one key of the ASGI scope's
``state``. Later steps, the route and the access line read it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

from keel.domain.principal import Principal
from keel.guard.idempotency import IdempotencyScope
from keel.http.routing import Route, RouteTable

_KEY = "keel"


@dataclass(slots=True)
class RequestState:
    route: Route | None = None
    routed: bool = False
    """Whether ``route`` was looked up (``None`` then means no route serves the path)."""
    template: str | None = None
    """Set by a step that answers before the router ran (a refusal, a replay) and by the
    limits: the route template the metrics and the access line label the request with."""
    principal: Principal | None = None
    replayed: bool = False
    """This answer is an idempotent replay: it did no work and spends no quota."""
    key_seen_absent: bool = False
    """The replay step's lookup found no row for the key: the claim need not read it."""
    idempotency: IdempotencyScope | None = None

    def matched(self, routes: RouteTable, scope: Scope) -> Route | None:
        """The route serving this request, looked up once."""
        if not self.routed:
            self.route = routes.match(scope["method"], scope["path"])
            self.routed = True
        return self.route


def state_of(scope: Scope) -> RequestState:
    """This request's state, created by the first step that asks."""
    state: dict[str, Any] = scope.setdefault("state", {})
    found = state.get(_KEY)
    if found is None:
        found = state[_KEY] = RequestState()
    return found


def peek(scope: Scope) -> RequestState | None:
    """This request's state if a step made one (never creates it)."""
    found = scope.get("state", {}).get(_KEY)
    return found if isinstance(found, RequestState) else None


def client_ip(scope: Scope) -> str | None:
    """The peer's address as the server saw it (the limits and the audit key on it)."""
    client = scope.get("client")
    return str(client[0]) if client else None

"""Load shedding on the request path: refuse early, by priority, while overloaded.

The decision (:mod:`keel.guard.shed`) runs before authentication and before
any database work, and answers ``503`` with ``Retry-After`` and a problem body;
the refused request is still labelled with its route template in the metrics,
as a limit's 429 is. A request's priority is its route's fact
(:class:`~keel.http.facts.RouteFacts`); a path no route serves is classified
by method and path. The route is looked up here once, for every later step.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from keel.guard.shed import (
    PROBE_PATHS,
    LoadShedder,
    Overloaded,
    Priority,
    classify,
    shed_reason,
)
from keel.http.problems import from_error
from keel.http.routing import RouteTable
from keel.http.state import state_of


class LoadSheddingMiddleware:
    """``routes`` gives a request its priority and, when refused, its route template."""

    def __init__(
        self, app: ASGIApp, *, shedder: LoadShedder, routes: RouteTable | None = None
    ) -> None:
        self.app = app
        self.shedder = shedder
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        shedder = self.shedder
        priority = self._priority(scope)
        lag = shedder.watchdog.smoothed_lag_seconds
        reason = shed_reason(priority, shedder.in_flight, lag, shedder.thresholds)
        if reason is not None:
            shedder.metrics.refused.labels(priority.name.lower(), reason).inc()
            self._note_route(scope)
            error = Overloaded("the server is overloaded; retry shortly", retry_after=2)
            await from_error(error, scope["path"])(scope, receive, send)
            return
        shedder.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            shedder.in_flight -= 1

    def _priority(self, scope: Scope) -> Priority:
        method, path = scope["method"], scope["path"]
        if path in PROBE_PATHS or self.routes is None or not path.startswith("/v1/"):
            return classify(method, path)
        route = state_of(scope).matched(self.routes, scope)
        return classify(method, path) if route is None else route.facts.priority_for(method)

    def _note_route(self, scope: Scope) -> None:
        """Refused before routing: the metrics and the access line still get the template."""
        if self.routes is None:
            return
        state = state_of(scope)
        route = state.matched(self.routes, scope)
        if route is not None:
            state.template = route.template

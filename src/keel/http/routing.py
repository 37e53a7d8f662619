"""The route table: routes and their facts for middleware that runs before FastAPI's router.

Rate limits, idempotency scopes, shedding and metrics key on the route
*template* (``GET /v1/recognitions/{recognition_id}``), never the raw path, so
ids cannot explode a key space or a label set. The table is compiled once from
the app's routers, with each route's :class:`~keel.http.facts.RouteFacts`; a
lookup is a short scan of compiled regular expressions, done once per request
(the first middleware that needs it keeps the answer in the request's
:class:`~keel.http.state.RequestState`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.routing import APIRoute

from keel.http.facts import Keys, RouteFacts, facts_of


@dataclass(frozen=True, slots=True)
class Route:
    """One method of one route: ``name`` is ``"POST /v1/recognitions"``."""

    method: str
    template: str
    facts: RouteFacts

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


@dataclass(frozen=True, slots=True)
class _Entry:
    regex: re.Pattern[str]
    route: Route


class RouteTable:
    def __init__(self, routers: Iterable[APIRouter]) -> None:
        self._entries: list[_Entry] = []
        for router in routers:
            for route in router.routes:
                if isinstance(route, APIRoute):
                    facts = facts_of(route.endpoint)
                    for method in sorted(route.methods or ()):
                        self._entries.append(
                            _Entry(route.path_regex, Route(method, route.path, facts))
                        )

    def match(self, method: str, path: str) -> Route | None:
        """The route serving ``method`` at ``path``, else ``None``."""
        for entry in self._entries:
            if entry.route.method == method and entry.regex.match(path):
                return entry.route
        return None

    def __iter__(self) -> Iterator[Route]:
        return (entry.route for entry in self._entries)

    def keyed(self) -> tuple[str, ...]:
        """The operations that take an ``Idempotency-Key``."""
        return tuple(route.name for route in self if route.facts.takes_keys)

    def keys_required_by_default(self) -> tuple[str, ...]:
        return tuple(route.name for route in self if route.facts.keys is Keys.REQUIRED)

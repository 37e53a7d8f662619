"""Route templates for middleware that runs before FastAPI's router.

Rate limits, idempotency scopes and metrics key on the route *template*
(``GET /v1/recognitions/{recognition_id}``), never the raw path, so ids cannot
explode a key space or a label set. The table is compiled once from the app's
routers; a lookup is a short scan of compiled regular expressions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.routing import APIRoute


@dataclass(frozen=True, slots=True)
class _Entry:
    regex: re.Pattern[str]
    methods: frozenset[str]
    template: str
    operation: str | None


class RouteTable:
    def __init__(self, routers: Iterable[APIRouter], operations: dict[str, str] | None = None):
        self._entries: list[_Entry] = []
        operations = operations or {}
        for router in routers:
            for route in router.routes:
                if isinstance(route, APIRoute):
                    for method in route.methods or ():
                        key = f"{method} {route.path}"
                        self._entries.append(
                            _Entry(
                                route.path_regex,
                                frozenset({method}),
                                route.path,
                                operations.get(key),
                            )
                        )

    def match(self, method: str, path: str) -> tuple[str, str | None] | None:
        """``("GET /v1/x/{id}", "x.get")`` for a served method and path, else ``None``."""
        for entry in self._entries:
            if method in entry.methods and entry.regex.match(path):
                return f"{method} {entry.template}", entry.operation
        return None

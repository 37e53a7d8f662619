"""The metrics step of the request path: duration by route template, requests in flight.

The families are built by :class:`keel.observe.metrics.Metrics`; this step
records every HTTP request into them (step 2 of the path, inside trace), and
into the SLO rollups' per-minute counts when the app keeps them. A synthetic
check's request (:mod:`keel.http.synthetic`) goes to its own counter instead
of both.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.clock import SYSTEM_CLOCK, Clock
from keel.http.routes_info import is_operational, route_template
from keel.http.synthetic import is_synthetic
from keel.observe.metrics import KNOWN_METHODS, Metrics
from keel.slo.rollup import RollupCounter


class MetricsMiddleware:
    """Times every HTTP request and counts the ones in flight (step 2 of the path).

    The labelled children are looked up once per label set and kept: a
    ``labels()`` call validates and hashes its values under a lock on every
    request, and the set of (method, route template, status) is small and
    bounded by the routes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        rollups: RollupCounter | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.rollups = rollups
        self.clock = clock
        self._durations: dict[tuple[str, str, int, bool], Any] = {}
        self._active: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "_OTHER"
        active = self._active.get(method)
        if active is None:
            active = self._active[method] = self.metrics.active_requests.labels(method)
        status = 500
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        active.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            active.dec()
            seconds = time.perf_counter() - started
            route = route_template(scope)
            if is_synthetic(scope):
                self.metrics.synthetic_requests.labels(method, route).inc()
            else:
                self._duration(method, route, status, scope["path"]).observe(seconds)
                if self.rollups is not None:
                    operational = is_operational(scope["path"])
                    now = self.clock.now().timestamp()
                    self.rollups.record(method, route, status, operational, seconds, now)

    def _duration(self, method: str, route: str, status: int, path: str) -> Any:
        key = (method, route, status, is_operational(path))
        child = self._durations.get(key)
        if child is None:
            slo = "false" if key[3] else "true"
            child = self.metrics.request_duration.labels(method, route, str(status), slo)
            self._durations[key] = child
        return child

"""Load shedding: refuse work early, by priority, while the process is overloaded.

Pressure is read from two O(1) signals: requests in flight in this process (a
counter this middleware keeps) and event-loop lag (the smoothed reading of the
process's one :class:`~keel.observe.watchdog.LoopWatchdog`, which also feeds
``/live``). Each priority class has a share of the thresholds at
which it is refused — exports and bulk work first, then writes, reads last,
probes never — so an overloaded Keel stays fast for what it still admits.
The decision runs before authentication and before any database work, and
answers ``503`` with ``Retry-After`` and a problem body; the refused request is
still labelled with its route template in the metrics, as a limit's 429 is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import structlog
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.api.problems import from_error
from keel.api.routing import RouteTable
from keel.errors import DependencyUnavailable
from keel.observe.routes_info import ROUTE_TEMPLATE_STATE
from keel.observe.watchdog import LoopWatchdog

log = structlog.get_logger(__name__)

SHED = Counter(
    "keel_shed_requests_total", "Requests refused by load shedding.", ["priority", "reason"]
)

PROBE_PATHS = frozenset({"/live", "/ready", "/health", "/metrics", "/version"})
BULK_PREFIXES = ("/v1/exports",)


class Priority(IntEnum):
    """Higher is shed later; PROBE is never shed."""

    BULK = 0
    WRITE = 1
    READ = 2
    PROBE = 3


# The share of each threshold at which a class starts to be refused.
SHED_AT: dict[Priority, float] = {Priority.BULK: 0.5, Priority.WRITE: 0.8, Priority.READ: 1.0}


class Overloaded(DependencyUnavailable):
    slug = "overloaded"
    title = "Server overloaded"


@dataclass(frozen=True, slots=True)
class ShedThresholds:
    max_in_flight: int = 256
    max_loop_lag_seconds: float = 0.25


def classify(method: str, path: str) -> Priority:
    if path in PROBE_PATHS:
        return Priority.PROBE
    if method == "POST" and (path.startswith(BULK_PREFIXES) or path == "/v1/evidence"):
        return Priority.BULK
    if method in ("GET", "HEAD", "OPTIONS"):
        return Priority.READ
    return Priority.WRITE


def shed_reason(
    priority: Priority, in_flight: int, loop_lag: float, thresholds: ShedThresholds
) -> str | None:
    """Why ``priority`` must be refused now, or ``None`` to admit. Pure and O(1)."""
    if priority is Priority.PROBE:
        return None
    share = SHED_AT[priority]
    if in_flight >= thresholds.max_in_flight * share:
        return "in_flight"
    if loop_lag >= thresholds.max_loop_lag_seconds * share:
        return "loop_lag"
    return None


class LoadShedder:
    """Holds the in-flight count and the thresholds; shared by the middleware and /ready."""

    def __init__(self, thresholds: ShedThresholds, watchdog: LoopWatchdog) -> None:
        self.thresholds = thresholds
        self.watchdog = watchdog
        self.in_flight = 0

    @property
    def pressure(self) -> float:
        """0 when idle, 1 at the read threshold: how close to shedding everything."""
        t = self.thresholds
        lag = self.watchdog.smoothed_lag_seconds
        return max(self.in_flight / t.max_in_flight, lag / t.max_loop_lag_seconds)


class LoadSheddingMiddleware:
    """``routes`` names a refused request's route template for the metrics and access line."""

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
        priority = classify(scope["method"], scope["path"])
        lag = shedder.watchdog.smoothed_lag_seconds
        reason = shed_reason(priority, shedder.in_flight, lag, shedder.thresholds)
        if reason is not None:
            SHED.labels(priority.name.lower(), reason).inc()
            self._note_route(scope)
            error = Overloaded("the server is overloaded; retry shortly", retry_after=2)
            await from_error(error, scope["path"])(scope, receive, send)
            return
        shedder.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            shedder.in_flight -= 1

    def _note_route(self, scope: Scope) -> None:
        """Refused before routing: resolve the template here (only on the refusal path)."""
        if self.routes is None:
            return
        matched = self.routes.match(scope["method"], scope["path"])
        if matched is not None:
            scope.setdefault("state", {})[ROUTE_TEMPLATE_STATE] = matched[0].split(" ", 1)[1]

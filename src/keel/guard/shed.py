"""Load shedding: refuse work early, by priority, while the process is overloaded.

Pressure is read from two O(1) signals: requests in flight in this process (a
counter the HTTP step, :mod:`keel.http.shed`, keeps) and event-loop lag (the smoothed reading of the
process's one :class:`~keel.observe.watchdog.LoopWatchdog`, which also feeds
``/live``). Each priority class has a share of the thresholds at
which it is refused — exports and bulk work first, then writes, reads last,
probes never — so an overloaded Keel stays fast for what it still admits.
This module is the decision, free of HTTP; a route's priority is one of its
facts (:class:`keel.http.facts.RouteFacts`), and ``classify`` covers paths no
route serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from prometheus_client import CollectorRegistry, Counter

from keel.errors import DependencyUnavailable
from keel.observe.watchdog import LoopWatchdog

PROBE_PATHS = frozenset({"/live", "/ready", "/health", "/metrics", "/version"})
"""Operational endpoints: never shed, never limited, kept out of SLO metrics and traces."""
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


class ShedMetrics:
    """``keel_shed_requests_total`` on ``registry`` (``None``: registered nowhere)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.refused = Counter(
            "keel_shed_requests_total",
            "Requests refused by load shedding.",
            ["priority", "reason"],
            registry=registry,
        )


class LoadShedder:
    """Holds the in-flight count and the thresholds; shared by the middleware and /ready."""

    def __init__(
        self,
        thresholds: ShedThresholds,
        watchdog: LoopWatchdog,
        metrics: ShedMetrics | None = None,
    ) -> None:
        self.thresholds = thresholds
        self.watchdog = watchdog
        self.metrics = metrics if metrics is not None else ShedMetrics()
        self.in_flight = 0

    @property
    def pressure(self) -> float:
        """0 when idle, 1 at the read threshold: how close to shedding everything."""
        t = self.thresholds
        lag = self.watchdog.smoothed_lag_seconds
        return max(self.in_flight / t.max_in_flight, lag / t.max_loop_lag_seconds)

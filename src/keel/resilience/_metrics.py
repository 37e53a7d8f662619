"""Prometheus metrics of the resilience layer, by breaker and by dependency.

Breakers and bulkheads count in plain ints and are *read* at scrape time by a custom
collector: a labelled ``Counter.inc()`` costs about half a microsecond (a lock and a
float), which alone would be more than the breaker's whole bookkeeping budget per call.
The dependency layer, which already spends that much on timing a call, uses ordinary
prometheus_client metrics.

Metrics live on a :class:`ResilienceMetrics` bound to one ``CollectorRegistry``: the
app's or the worker's own, built by its composition root and handed to every breaker,
bulkhead and dependency; a fresh one per test. A part built without any counts on
:func:`default_metrics`, which nothing exposes.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keel.resilience._state import BreakerState


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """Counters of one breaker since it was created (never reset by state changes)."""

    name: str
    state: BreakerState
    calls: Mapping[str, int]
    """By outcome: ``success``, ``failure``, ``slow`` (a slow success; a slow failure is
    a ``failure``), ``ignored``."""
    not_permitted: int
    transitions: Mapping[tuple[BreakerState, BreakerState], int]


@dataclass(frozen=True, slots=True)
class BulkheadStats:
    name: str
    in_use: int
    capacity: int
    rejected: int


class _HasBreakerStats(Protocol):
    def stats(self) -> BreakerStats: ...


class _HasBulkheadStats(Protocol):
    def stats(self) -> BulkheadStats: ...


class _ScrapeCollector(Collector):
    """Reads the live breakers and bulkheads at scrape time."""

    def __init__(self) -> None:
        self.breakers: weakref.WeakSet[_HasBreakerStats] = weakref.WeakSet()
        self.bulkheads: weakref.WeakSet[_HasBulkheadStats] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "keel_breaker_state",
            "1 for the state each breaker is in, 0 for the others",
            labels=["breaker", "state"],
        )
        calls = CounterMetricFamily(
            "keel_breaker_calls",
            "Calls seen by a breaker, by outcome",
            labels=["breaker", "outcome"],
        )
        not_permitted = CounterMetricFamily(
            "keel_breaker_not_permitted", "Calls a breaker rejected", labels=["breaker"]
        )
        transitions = CounterMetricFamily(
            "keel_breaker_transitions",
            "State changes of a breaker",
            labels=["breaker", "from_state", "to_state"],
        )
        # Two breakers may share a name (two instances in one test process); sum them
        # rather than emit duplicate samples.
        merged: dict[str, list[BreakerStats]] = {}
        for breaker in list(self.breakers):
            stats = breaker.stats()
            merged.setdefault(stats.name, []).append(stats)
        for name, group in sorted(merged.items()):
            for s in BreakerState:
                state.add_metric([name, s.value], 1.0 if group[-1].state is s else 0.0)
            for outcome in ("success", "failure", "slow", "ignored"):
                calls.add_metric([name, outcome], float(sum(g.calls[outcome] for g in group)))
            not_permitted.add_metric([name], float(sum(g.not_permitted for g in group)))
            pairs: dict[tuple[BreakerState, BreakerState], int] = {}
            for g in group:
                for pair, n in g.transitions.items():
                    pairs[pair] = pairs.get(pair, 0) + n
            for (a, b), n in sorted(pairs.items()):
                transitions.add_metric([name, a.value, b.value], float(n))
        in_use = GaugeMetricFamily(
            "keel_bulkhead_in_use", "Calls holding a bulkhead slot", labels=["dependency"]
        )
        capacity = GaugeMetricFamily(
            "keel_bulkhead_capacity", "Slots of a bulkhead", labels=["dependency"]
        )
        rejected = CounterMetricFamily(
            "keel_bulkhead_rejected", "Calls a full bulkhead rejected", labels=["dependency"]
        )
        bulk: dict[str, list[BulkheadStats]] = {}
        for bulkhead in list(self.bulkheads):
            held = bulkhead.stats()
            bulk.setdefault(held.name, []).append(held)
        for name, items in sorted(bulk.items()):
            in_use.add_metric([name], float(sum(h.in_use for h in items)))
            capacity.add_metric([name], float(sum(h.capacity for h in items)))
            rejected.add_metric([name], float(sum(h.rejected for h in items)))
        yield from (state, calls, not_permitted, transitions, in_use, capacity, rejected)


class ResilienceMetrics:
    """All metrics of the resilience layer on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._scrape = _ScrapeCollector()
        self.registry.register(self._scrape)
        self.dependency_calls = Counter(
            "keel_dependency_calls",
            "Calls to a dependency by final outcome "
            "(success, failure, timeout, rejected, client_error)",
            ["dependency", "outcome"],
            registry=self.registry,
        )
        self.dependency_duration = Histogram(
            "keel_dependency_call_duration_seconds",
            "Time of a dependency call, retries and backoff included",
            ["dependency"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.dependency_retries = Counter(
            "keel_dependency_retries",
            "Retries made (attempts beyond the first)",
            ["dependency"],
            registry=self.registry,
        )
        self.dependency_rejections = Counter(
            "keel_dependency_rejections",
            "Attempts refused by Keel itself, by reason "
            "(breaker_open, bulkhead_full, retry_budget)",
            ["dependency", "reason"],
            registry=self.registry,
        )
        self.dependency_fallbacks = Counter(
            "keel_dependency_fallbacks",
            "Calls answered by the fallback instead",
            ["dependency"],
            registry=self.registry,
        )

    @property
    def live_collector(self) -> Collector:
        """The breakers' and bulkheads' collector (read at scrape time, never in the
        multiprocess files: ``/metrics`` serves it explicitly under ``--workers N``)."""
        return self._scrape

    def watch_breaker(self, breaker: _HasBreakerStats) -> None:
        self._scrape.breakers.add(breaker)

    def watch_bulkhead(self, bulkhead: _HasBulkheadStats) -> None:
        self._scrape.bulkheads.add(bulkhead)


@functools.cache
def default_metrics() -> ResilienceMetrics:
    """The metrics of parts built without any (tools, tests), on a registry of their own
    that no ``/metrics`` serves; created on first use, never registered globally."""
    return ResilienceMetrics()

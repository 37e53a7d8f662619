"""Prometheus metrics: request duration and in-flight requests, DB pool, build info.

Names and labels follow the OpenTelemetry HTTP semantic conventions as the
OpenTelemetry→Prometheus translation spells them (``http.server.request.duration``
in seconds → ``http_server_request_duration_seconds``; attributes
``http.request.method``, ``http.route``, ``http.response.status_code`` →
``http_request_method``, ``http_route``, ``http_response_status_code``), so
dashboards and SLO rules written for any OpenTelemetry-instrumented service
read Keel unchanged. The ``slo`` label is Keel's own: ``"false"`` on probes and
``/metrics``, which must never count towards (or dilute) the SLO. Requests of
synthetic checks are not on the histogram at all: they are counted in
``keel_synthetic_requests_total``, so no SLI (nor a dashboard of real traffic)
sees them and the histogram keeps its labels.

The histogram's buckets always contain the SLO latency threshold exactly, so
"the share of requests faster than the threshold" is one bucket, not an
interpolation.

Each app gets its own ``CollectorRegistry`` (:func:`open_registry`), made
first by the composition root: every part's metrics are built on it and handed
to the part, so nothing is registered at import and two apps in one process
never share (or collide on) a family. Under ``keel serve --workers N``
prometheus_client's multiprocess mode is on (``PROMETHEUS_MULTIPROC_DIR``):
every worker writes its samples to files there and ``/metrics`` aggregates
them, whichever worker answers.

A few families are read at scrape time from live objects (breakers, bulkheads)
or from the database (queue depth). Those *scraped* collectors are not in the
multiprocess files, so they are added to the exposition explicitly; a family a
scraped collector provides replaces any sampled family of the same name (a job
worker inside the server samples queue depth too: one family, never two).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.observe.metrics_directory import MULTIPROC_ENV
from keel.observe.worker_restarts import declare as declare_worker_restarts
from keel.slo.spec import RequestHistogram

# OpenTelemetry's advised boundaries for http.server.request.duration.
OTEL_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# Any other method is reported as _OTHER, as the conventions say, so junk cannot add series.
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)


# The request histogram the SLO rules read (keel.slo): its name and labels.
REQUEST_DURATION = "http_server_request_duration_seconds"
REQUEST_DURATION_LABELS = ("http_request_method", "http_route", "http_response_status_code", "slo")


def duration_buckets(slo_threshold: float) -> tuple[float, ...]:
    return tuple(sorted({*OTEL_DURATION_BUCKETS, float(slo_threshold)}))


def request_histogram(slo_threshold: float) -> RequestHistogram:
    """The request histogram as the SLO rules see it: name, labels, real bucket edges."""
    return RequestHistogram(
        REQUEST_DURATION, frozenset(REQUEST_DURATION_LABELS), duration_buckets(slo_threshold)
    )


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def open_registry() -> CollectorRegistry:
    """A registry for one app or worker process, with prometheus_client's own ``process_*``
    and ``python_*`` families (served in a single process; the multiprocess files hold
    none); the multiprocess directory, when one is named, made first (a multiprocess
    metric opens its file when it is created)."""
    directory = multiprocess_dir()
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ScrapedCollector(Collector, Protocol):
    """A collector that reads its samples when scraped; ``names`` are its families."""

    @property
    def names(self) -> frozenset[str]: ...


class Exposition:
    """Sampled sources and scraped collectors as one collector: a sampled family that a
    scraped collector also provides is skipped."""

    def __init__(self, sampled: Iterable[Collector], scraped: Iterable[ScrapedCollector]) -> None:
        self._sampled = tuple(sampled)
        self._scraped = tuple(scraped)

    def collect(self) -> Iterator[Metric]:
        replaced = frozenset(name for collector in self._scraped for name in collector.names)
        for source in self._sampled:
            for family in source.collect():
                if family.name not in replaced:
                    yield family
        for collector in self._scraped:
            yield from collector.collect()


class Metrics:
    """The HTTP server's own families on ``registry``, and the ``/metrics`` exposition of
    everything on it."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        slo_threshold: float,
        version: str,
        release_id: str,
        git_sha: str,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            REQUEST_DURATION,
            "Duration of HTTP server requests.",
            list(REQUEST_DURATION_LABELS),
            buckets=duration_buckets(slo_threshold),
            registry=self.registry,
        )
        self.active_requests = Gauge(
            "http_server_active_requests",
            "Number of active HTTP server requests.",
            ["http_request_method"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.pool_connections = Gauge(
            "db_client_connection_count",
            "Database pool connections by state (used, idle).",
            ["db_client_connection_pool_name", "db_client_connection_state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "db_client_connection_max",
            "The most connections the database pool allows (size plus overflow).",
            ["db_client_connection_pool_name"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.synthetic_requests = Counter(
            "keel_synthetic_requests_total",
            "HTTP requests of synthetic checks, kept off the request histogram and the SLOs.",
            ["http_request_method", "http_route"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            "keel_build_info",
            "Always 1; the labels say which build is running.",
            ["version", "release_id", "git_sha"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.build_info.labels(version=version, release_id=release_id, git_sha=git_sha).set(1)
        self.worker_restarts = declare_worker_restarts(self.registry)
        self._scraped: list[ScrapedCollector] = []
        self._live: list[Collector] = []
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def add_scraped(
        self,
        collector: ScrapedCollector,
        refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Serve ``collector``'s families (replacing any sampled ones of the same names);
        ``refresh`` is awaited before each scrape (it must bound its own time)."""
        self._scraped.append(collector)
        if refresh is not None:
            self._refreshers.append(refresh)

    def add_live(self, collector: Collector) -> None:
        """A collector already on this registry that reads live objects: in multiprocess
        mode it is not in the shared files, so it is served explicitly."""
        self._live.append(collector)

    async def refresh(self) -> None:
        for refresh in self._refreshers:
            await refresh()

    def watch_pool(self, engine: AsyncEngine, name: str = "main") -> None:
        """Keep the pool gauges current from the pool's own checkout/checkin events."""
        pool = engine.sync_engine.pool
        used = self.pool_connections.labels(name, "used")
        idle = self.pool_connections.labels(name, "idle")
        size = getattr(pool, "size", None)
        overflow = getattr(pool, "_max_overflow", 0)
        if callable(size):
            self.pool_max.labels(name).set(int(size()) + max(0, int(overflow)))

        def refresh(*_args: Any) -> None:
            checked_out = getattr(pool, "checkedout", None)
            checked_in = getattr(pool, "checkedin", None)
            if callable(checked_out):
                used.set(int(checked_out()))
            if callable(checked_in):
                idle.set(int(checked_in()))

        for name_of_event in ("checkout", "checkin", "connect", "close"):
            event.listen(pool, name_of_event, refresh)

    def render(self) -> tuple[bytes, str]:
        """The text exposition: this app's registry and the scraped collectors; across
        every worker's files in multiprocess mode."""
        directory = multiprocess_dir()
        sampled: list[Collector]
        if directory is None:
            sampled = [self.registry]
        else:
            files = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(files, path=directory)  # type: ignore[no-untyped-call]
            sampled = [files, *self._live]
        exposition = Exposition(sampled, self._scraped)
        return generate_latest(exposition), CONTENT_TYPE_LATEST

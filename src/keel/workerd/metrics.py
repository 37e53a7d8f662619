"""What the worker's ``/metrics`` serves, and the supervisor's own families.

A standalone worker serves its own registry (:class:`WorkerMetrics`: its job
durations, retries, dead jobs, breakers, loop lag) with queue depth and oldest-ready age
read from the database when scraped (``keel.jobs.metrics.QueueDepthCollector``,
the API's collector), so every deployment shape can alert on and scale by them.

Under ``keel worker --autoscale`` the children write their samples to a
prometheus_client multiprocess directory that the supervisor prepares, and the
supervisor's port serves their sum beside its own families: scale events and
the process count, on a registry of the supervisor's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client import values as prometheus_values
from prometheus_client.registry import Collector

from keel.clock import Clock
from keel.db.engine import Database
from keel.jobs.metrics import JobMetrics, QueueDepthCollector
from keel.jobs.queue import connector_for
from keel.observe.log_writer import dropped_lines_counter
from keel.observe.metrics import Exposition, multiprocess_dir, open_registry
from keel.observe.watchdog import loop_lag_gauge
from keel.resilience import ResilienceMetrics
from keel.workerd.scaling import Direction


def writes_to_files() -> bool:
    """Whether this process's metrics keep their values in multiprocess files.

    prometheus_client chooses once, when it is first imported: in files when
    ``PROMETHEUS_MULTIPROC_DIR`` was set by then (a supervised child, spawned with
    it), in memory otherwise (the supervisor, which sets it only later).
    """
    return prometheus_values.ValueClass is not prometheus_values.MutexValue


class WorkerMetrics:
    """A standalone worker's families, on a registry of its own: those it sets (the API's
    guard and HTTP families are not among them)."""

    def __init__(self) -> None:
        self.registry = open_registry()
        self.jobs = JobMetrics(self.registry)
        self.resilience = ResilienceMetrics(self.registry)
        self.loop_lag = loop_lag_gauge(self.registry)
        self.log_lines_dropped = dropped_lines_counter(self.registry)


class WorkerExposition:
    """The families of one ``/metrics`` scrape: sampled ones and the queue reading.

    ``own``: collectors of this process served beside the samples; ``directory``:
    the multiprocess directory to sum (a worker's own, when it runs in
    multiprocess mode, or the supervisor's children's). A process that itself runs
    in multiprocess mode writes its own samples to the files too, so then they are
    read only from there (never twice).
    """

    def __init__(
        self,
        depth: QueueDepthCollector,
        *,
        own: Iterable[Collector],
        directory: str | None = None,
    ) -> None:
        self.depth = depth
        self._own = tuple(own)
        self._directory = directory

    async def render(self) -> tuple[bytes, str]:
        await self.depth.refresh()  # bounded and cached by the collector
        sampled: list[Collector] = [] if writes_to_files() else list(self._own)
        directory = self._directory or multiprocess_dir()
        if directory is not None:
            files = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(files, path=directory)  # type: ignore[no-untyped-call]
            sampled.append(files)
        return generate_latest(Exposition(sampled, [self.depth])), CONTENT_TYPE_LATEST


def queue_depth(
    database: Database, queues: Iterable[str], clock: Clock, timeout_seconds: float
) -> QueueDepthCollector:
    return QueueDepthCollector(
        connector_for(database), queues, clock=clock, timeout_seconds=timeout_seconds
    )


class SupervisorMetrics:
    """The autoscaling supervisor's own families, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.scale_events = Counter(
            "keel_worker_scale_events_total",
            "Times the autoscaling supervisor changed its worker process count.",
            ["direction"],
            registry=self.registry,
        )
        for direction in Direction:
            self.scale_events.labels(direction.value)
        self.processes = Gauge(
            "keel_worker_processes",
            "Worker processes the supervisor runs (not counting those draining).",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.wanted = Gauge(
            "keel_worker_processes_wanted",
            "The process count the last backlog reading asked for, within MIN..MAX.",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.restarts = Counter(
            "keel_worker_process_restarts_total",
            "Worker processes that exited without being told to and were started again.",
            registry=self.registry,
        )


def forget_process(directory: str, pid: int) -> None:
    """Drop a dead child's per-process gauges from the multiprocess directory.

    ``mark_process_dead`` removes only the ``live*`` gauges; the default mode keeps
    one series per process forever, and a scaler starts and stops many.
    """
    prometheus_multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    for stale in Path(directory).glob(f"gauge_*_{pid}.db"):
        stale.unlink(missing_ok=True)

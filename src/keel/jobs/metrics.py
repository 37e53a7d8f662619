"""Prometheus metrics of the job queue.

Durations and retries are counted where they happen, in the worker, and dead jobs
in dead-lettering (``keel.jobs.dead_letter``), on the :class:`JobMetrics` that the
composition root (the API's or ``keel worker``'s) builds on its registry.
Queue depth and the age of the oldest ready job are facts of the database, so a
worker samples them periodically, and the API reads them when ``/metrics`` is
scraped (:class:`QueueDepthCollector`): the API is what a deploy orchestrator
scrapes, and on PostgreSQL its processes run no worker. Every process sees the
same numbers: aggregate them with ``max``, never ``sum``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.exc import SQLAlchemyError

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import KeelError
from keel.jobs.connector import JobConnector, QueueStats
from keel.jobs.states import JobState
from keel.synthetic.checks import STEPS
from keel.synthetic.metrics import SyntheticMetrics

log = structlog.get_logger(__name__)

QUEUE_DEPTH_NAME = "keel_jobs_queue_depth"
QUEUE_DEPTH_HELP = "Jobs in the queue store, by queue and state."
OLDEST_READY_AGE_NAME = "keel_jobs_oldest_ready_age_seconds"
OLDEST_READY_AGE_HELP = "How long the longest-waiting claimable job of a queue has been due."

# Every outcome a job's duration is recorded with (the worker's ``execute``).
JOB_OUTCOMES = (
    JobState.SUCCEEDED.value,
    JobState.RETRYING.value,
    JobState.DEAD.value,
    "deferred",
)


class JobMetrics:
    """The queue's families on ``registry`` (``None``: registered nowhere), built by the
    composition root of the API or of ``keel worker`` and handed to the worker."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.synthetic = SyntheticMetrics(STEPS, registry)
        """The periodic synthetic check's families: it runs as one of this worker's jobs."""
        self.queue_depth = Gauge(
            QUEUE_DEPTH_NAME, QUEUE_DEPTH_HELP, ["queue", "state"], registry=registry
        )
        self.oldest_ready_age = Gauge(
            OLDEST_READY_AGE_NAME, OLDEST_READY_AGE_HELP, ["queue"], registry=registry
        )
        self.job_duration = Histogram(
            "keel_job_duration_seconds",
            "Handler run time per attempt, by job type and outcome.",
            ["job_type", "outcome"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.job_retries = Counter(
            "keel_job_retries_total",
            "Failed attempts that were scheduled for a retry.",
            ["job_type"],
            registry=registry,
        )
        self.jobs_deferred = Counter(
            "keel_jobs_deferred_total",
            "Attempts a handler could not make (an open breaker) and rescheduled unspent.",
            ["job_type"],
            registry=registry,
        )
        self.jobs_dead = Counter(
            "keel_jobs_dead_total",
            "Jobs that ran out of attempts and were dead-lettered.",
            ["job_type"],
            registry=registry,
        )
        self.leases_reclaimed = Counter(
            "keel_jobs_leases_reclaimed_total",
            "Running jobs taken back after their lease expired.",
            registry=registry,
        )

    def declare_job_series(self, job_types: Iterable[str]) -> None:
        """Create each job type's series at zero, so a scrape finds them before the first
        run (an absent series reads as "no data", not "0")."""
        for name in job_types:
            for outcome in JOB_OUTCOMES:
                self.job_duration.labels(name, outcome)
            self.job_retries.labels(name)
            self.jobs_deferred.labels(name)
            self.jobs_dead.labels(name)

    def record_stats(self, stats: list[QueueStats]) -> None:
        for item in stats:
            for state in JobState:
                self.queue_depth.labels(item.queue, state.value).set(item.depth.get(state, 0))
            self.oldest_ready_age.labels(item.queue).set(item.oldest_ready_age_seconds)


class QueueDepthCollector:
    """Queue depth and oldest ready age, read from the database for ``/metrics``.

    ``refresh()`` runs before a scrape, in the event loop; ``collect()`` (called by
    prometheus_client, synchronously) only formats the last reading. A reading is
    reused for ``cache_seconds`` so scrapes from several Prometheus servers cost one
    query, and is bounded by ``timeout_seconds`` so a slow database delays a scrape
    by at most that. When the database cannot be read the last good reading stays
    (with its age in the log); before any reading the families have no samples
    rather than zeros that would claim an empty queue.
    """

    names = frozenset({QUEUE_DEPTH_NAME, OLDEST_READY_AGE_NAME})

    def __init__(
        self,
        connector: JobConnector,
        queues: Iterable[str],
        *,
        clock: Clock = SYSTEM_CLOCK,
        cache_seconds: float = 5.0,
        timeout_seconds: float = 1.0,
    ) -> None:
        self._connector = connector
        self._queues = tuple(sorted(set(queues)))
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._timeout_seconds = timeout_seconds
        self._reading: list[QueueStats] | None = None
        self._attempted_at = -math.inf
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        if self._clock.monotonic() - self._attempted_at < self._cache_seconds:
            return
        async with self._lock:  # concurrent scrapes wait for one query
            if self._clock.monotonic() - self._attempted_at < self._cache_seconds:
                return
            self._attempted_at = self._clock.monotonic()
            try:
                async with asyncio.timeout(self._timeout_seconds):
                    self._reading = await self._connector.stats(self._clock.now())
            except (TimeoutError, KeelError, SQLAlchemyError, OSError) as exc:
                log.warning("queue_depth_unavailable", error=type(exc).__name__)

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(QUEUE_DEPTH_NAME, QUEUE_DEPTH_HELP, labels=["queue", "state"])
        oldest = GaugeMetricFamily(OLDEST_READY_AGE_NAME, OLDEST_READY_AGE_HELP, labels=["queue"])
        if self._reading is not None:
            read = {item.queue: item for item in self._reading}
            for queue in sorted({*self._queues, *read}):
                item = read.get(queue)
                for state in JobState:
                    count = item.depth.get(state, 0) if item is not None else 0
                    depth.add_metric([queue, state.value], float(count))
                age = item.oldest_ready_age_seconds if item is not None else 0.0
                oldest.add_metric([queue], age)
        yield depth
        yield oldest

"""Prometheus metrics of the job queue.

Durations and retries are counted where they happen, in the worker, and dead jobs
in dead-lettering (``keel.jobs.dead_letter``).
Queue depth and the age of the oldest ready job are facts of the database, so a
worker samples them periodically (every worker sees the same numbers: aggregate
them with ``max``, never ``sum``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from keel.jobs.queue import QueueStats
from keel.jobs.states import JobState

QUEUE_DEPTH = Gauge(
    "keel_jobs_queue_depth", "Jobs in the queue store, by queue and state.", ["queue", "state"]
)
OLDEST_READY_AGE = Gauge(
    "keel_jobs_oldest_ready_age_seconds",
    "How long the longest-waiting claimable job of a queue has been due.",
    ["queue"],
)
JOB_DURATION = Histogram(
    "keel_job_duration_seconds",
    "Handler run time per attempt, by job type and outcome.",
    ["job_type", "outcome"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
JOB_RETRIES = Counter(
    "keel_job_retries_total", "Failed attempts that were scheduled for a retry.", ["job_type"]
)
JOBS_DEFERRED = Counter(
    "keel_jobs_deferred_total",
    "Attempts a handler could not make (an open breaker) and rescheduled unspent.",
    ["job_type"],
)
JOBS_DEAD = Counter(
    "keel_jobs_dead_total", "Jobs that ran out of attempts and were dead-lettered.", ["job_type"]
)
LEASES_RECLAIMED = Counter(
    "keel_jobs_leases_reclaimed_total", "Running jobs taken back after their lease expired."
)


def record_stats(stats: list[QueueStats]) -> None:
    for item in stats:
        for state in JobState:
            QUEUE_DEPTH.labels(item.queue, state.value).set(item.depth.get(state, 0))
        OLDEST_READY_AGE.labels(item.queue).set(item.oldest_ready_age_seconds)

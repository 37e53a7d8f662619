"""Background jobs: a queue in Keel's own database.

``enqueue`` joins the caller's transaction (``enqueue_now`` is one autocommit
statement for callers with no transaction to join, ``Enqueuer`` a run of them on
one held connection); workers claim due jobs under a lease
(``FOR UPDATE SKIP LOCKED`` and ``LISTEN/NOTIFY`` on PostgreSQL, short polling
under ``BEGIN IMMEDIATE`` on SQLite), retry failures with full-jitter backoff,
dead-letter what keeps failing, and run cron schedules once per slot. Delivery
is at-least-once: handlers must be idempotent (see :mod:`keel.jobs.registry`).
"""

from __future__ import annotations

from keel.jobs.errors import JobStoreUnavailable, PermanentJobError
from keel.jobs.health import check_job_store
from keel.jobs.queue import NewJob, cancel, enqueue, enqueue_many, requeue_dead
from keel.jobs.registry import JobContext, JobResources, JobType, Periodic, Registry
from keel.jobs.retry import RetryPolicy
from keel.jobs.standalone import Enqueuer, enqueue_now
from keel.jobs.states import JobState

__all__ = [
    "Enqueuer",
    "JobContext",
    "JobResources",
    "JobState",
    "JobStoreUnavailable",
    "JobType",
    "NewJob",
    "Periodic",
    "PermanentJobError",
    "Registry",
    "RetryPolicy",
    "cancel",
    "check_job_store",
    "enqueue",
    "enqueue_many",
    "enqueue_now",
    "requeue_dead",
]

"""Background jobs: a queue in Keel's own database (or in memory, for tests).

``enqueue(into, …)`` adds one job and an ``Enqueuer`` many; into a session the
job joins the caller's transaction, into a database it commits at once (see
:mod:`keel.jobs.queue`). Workers claim due jobs under a lease
(``FOR UPDATE SKIP LOCKED`` and ``LISTEN/NOTIFY`` on PostgreSQL, short polling
under ``BEGIN IMMEDIATE`` on SQLite), retry failures with full-jitter backoff,
dead-letter what keeps failing, and run cron schedules once per slot. Delivery
is at-least-once: handlers must be idempotent (see :mod:`keel.jobs.registry`).

Everything reaches the store through one seam, :class:`JobConnector`
(:mod:`keel.jobs.connector`): :class:`SqliteJobConnector` and
:class:`PostgresJobConnector`, :class:`MemoryJobConnector` without a database.
"""

from __future__ import annotations

from keel.jobs.connector import JobConnector, JobRecord, QueueStats
from keel.jobs.errors import JobStoreUnavailable, PermanentJobError
from keel.jobs.health import check_job_store
from keel.jobs.memory import MemoryJobConnector
from keel.jobs.queue import Enqueuer, NewJob, cancel, connector_for, enqueue, requeue_dead
from keel.jobs.registry import JobContext, JobResources, JobType, Periodic, Registry
from keel.jobs.retry import RetryPolicy
from keel.jobs.sql import PostgresJobConnector, SqliteJobConnector, sql_connector
from keel.jobs.states import JobState

__all__ = [
    "Enqueuer",
    "JobConnector",
    "JobContext",
    "JobRecord",
    "JobResources",
    "JobState",
    "JobStoreUnavailable",
    "JobType",
    "MemoryJobConnector",
    "NewJob",
    "Periodic",
    "PermanentJobError",
    "PostgresJobConnector",
    "QueueStats",
    "Registry",
    "RetryPolicy",
    "SqliteJobConnector",
    "cancel",
    "check_job_store",
    "connector_for",
    "enqueue",
    "requeue_dead",
    "sql_connector",
]

"""Job types and periodic jobs: what a worker knows how to run.

A :class:`JobType` is a value: a name, the handler, its default queue and its
retry policy. Modules declare their job types as constants and list them in a
``JOB_TYPES`` tuple (and cron schedules in ``PERIODIC``); ``keel.jobs.catalog``
assembles Keel's own, plus any module named in ``KEEL_JOBS_MODULES``, into one
:class:`Registry` per worker. No registration happens at import time.

**Delivery is at-least-once.** A worker may die after a handler did its work but
before the job was marked succeeded; the job then runs again. Handlers must be
idempotent: :class:`JobContext` gives them the job id and the attempt number to
key their side effects on (a conditional update, an ``Idempotency-Key`` header,
a unique constraint), as the export and webhook handlers do.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from croniter import croniter

from keel.errors import ConfigurationError, InvalidInput
from keel.jobs.retry import RetryPolicy

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.ext.asyncio import AsyncSession

    from keel.audit import Auditor
    from keel.clock import Clock
    from keel.db.engine import Database
    from keel.resilience import DependencyPool
    from keel.settings import Settings
    from keel.storage import BlobStore
    from keel.synthetic.metrics import SyntheticMetrics

DEFAULT_QUEUE = "default"
QUEUES = ("critical", "default", "exports")
"""The named queues Keel itself uses; each is a bulkhead with its own concurrency."""


class UnknownJobType(InvalidInput):
    title = "Unknown job type"


@dataclass(frozen=True)
class JobResources:
    """What handlers may use, built once per worker."""

    database: Database
    settings: Settings
    clock: Clock
    store: BlobStore
    http: httpx.AsyncClient
    webhooks: DependencyPool
    """One dependency (timeout, bulkhead, breaker, retry) per webhook host."""
    audit: Auditor
    """The audit log's write side: handlers, breaker transitions and dead-lettering share it."""
    synthetic: SyntheticMetrics | None = None
    """Where the periodic synthetic check counts its steps (the worker's registry)."""


@dataclass(frozen=True)
class JobContext:
    """One attempt of one job, as its handler sees it."""

    job_id: str
    job_type: str
    queue: str
    attempt: int
    max_attempts: int
    payload: dict[str, Any]
    resources: JobResources

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


Handler = Callable[[JobContext], Awaitable[None]]


@dataclass(frozen=True)
class DeadLetter:
    """A job that just went ``dead``, as its job type's ``on_dead`` hook sees it."""

    job: JobContext
    """The last attempt (its number, the payload, the worker's resources)."""
    cause: str
    """Short and safe to show a user: the failure's exception type, or ``lease expired``."""
    error: str
    """The full error text kept on the job row, for operators."""


DeadHook = Callable[["AsyncSession", DeadLetter], Awaitable[None]]
"""Runs inside the transaction that dead-letters the job, so a domain row that
tracks the job (an export) can never be left saying the work is still going on.
It runs in a savepoint: if it fails, the job is dead-lettered anyway and the
failure logged, rather than the dead-lettering (and the reclaimer) wedging."""


@dataclass(frozen=True)
class JobType:
    name: str
    handler: Handler
    queue: str = DEFAULT_QUEUE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: float = 300.0
    on_dead: DeadHook | None = None
    """Called when a job of this type goes dead, from a failed last attempt or an
    expired lease on its last attempt (its worker died)."""


@dataclass(frozen=True)
class Periodic:
    """A cron schedule that enqueues ``job_type`` once per slot, whatever the worker count."""

    name: str
    cron: str
    job_type: str
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ConfigurationError(f"periodic job {self.name!r}: bad cron {self.cron!r}")

    def latest_slot(self, now: datetime) -> datetime:
        """The most recent schedule time at or before ``now``."""
        slot: datetime = croniter(self.cron, now).get_prev(datetime)
        if croniter.match(self.cron, now) and now.second == 0 and now.microsecond == 0:
            return now
        return slot


class Registry:
    def __init__(
        self, job_types: Iterable[JobType] = (), periodic: Iterable[Periodic] = ()
    ) -> None:
        self._types: dict[str, JobType] = {}
        self._periodic: dict[str, Periodic] = {}
        for job_type in job_types:
            self.add(job_type)
        for schedule in periodic:
            self.add_periodic(schedule)

    def add(self, job_type: JobType) -> None:
        if job_type.name in self._types:
            raise ConfigurationError(f"job type {job_type.name!r} registered twice")
        self._types[job_type.name] = job_type

    def add_periodic(self, schedule: Periodic) -> None:
        if schedule.name in self._periodic:
            raise ConfigurationError(f"periodic job {schedule.name!r} registered twice")
        self._periodic[schedule.name] = schedule

    def add_module(self, module_name: str) -> None:
        """Take ``JOB_TYPES`` and ``PERIODIC`` from a module (``KEEL_JOBS_MODULES``)."""
        module = importlib.import_module(module_name)
        for job_type in getattr(module, "JOB_TYPES", ()):
            self.add(job_type)
        for schedule in getattr(module, "PERIODIC", ()):
            self.add_periodic(schedule)

    def get(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobType(f"no job type {name!r} is registered") from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    @property
    def job_types(self) -> list[JobType]:
        return list(self._types.values())

    @property
    def periodic(self) -> list[Periodic]:
        return list(self._periodic.values())

    def check(self) -> None:
        """Every periodic job names a registered job type."""
        for schedule in self._periodic.values():
            self.get(schedule.job_type)

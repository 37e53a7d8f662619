"""The job queue's storage seam: what a queue store must do, and the values it trades.

Procrastinate splits its queue into a *manager* (what callers ask for: defer a
job, list jobs) and a *connector* (how one store carries it out). Keel does the
same: :mod:`keel.jobs.queue` (enqueue, ``Enqueuer``, operator actions), the
worker, the scheduler, dead-lettering, the depth metrics and the readiness check
speak only :class:`JobConnector`; :mod:`keel.jobs.sql` implements it for SQLite
and PostgreSQL (the one module that runs the queue's SQL, from the statements
named in :mod:`keel.jobs.queries`) and :mod:`keel.jobs.memory` for tests and
embedders with no database. One contract suite runs every behaviour on all three.

Every state change the seam offers is fenced where the SQL is: an outcome is
written only while (job id, worker, attempt) still holds the lease, and the
states a statement moves from come from :mod:`keel.jobs.states`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from keel.jobs.states import JobState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

LEASE_EXPIRED = "lease expired: the worker stopped heartbeating"
"""The ``last_error`` of a job whose lease ran out (its worker died)."""


# One job's columns after validation, in the order of the insert's parameters
# from ``queue`` on: queue, job_type, payload, state, priority, max_attempts,
# run_at, unique_key. A plain tuple, not a dataclass: a batch makes one per
# distinct job and transposes them into columns with ``zip``.
ResolvedJob = tuple[str, str, dict[str, Any], str, int, int, datetime, str | None]


@dataclass(frozen=True, slots=True)
class JobColumns:
    """A validated batch, one list per column (what the ``unnest`` insert binds)."""

    ids: list[str]
    queues: list[str]
    job_types: list[str]
    payloads: list[dict[str, Any]]
    states: list[str]
    priorities: list[int]
    max_attempts: list[int]
    run_ats: list[datetime]
    unique_keys: list[str | None]

    def row(self, index: int) -> ResolvedJob:
        """One job's columns back as a row (the single-row insert binds a row)."""
        return (
            self.queues[index],
            self.job_types[index],
            self.payloads[index],
            self.states[index],
            self.priorities[index],
            self.max_attempts[index],
            self.run_ats[index],
            self.unique_keys[index],
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """The fence an attempt's outcome is written under: the job is still running, on
    this attempt, leased to this worker. A worker whose lease expired (and whose job
    another worker reclaimed) writes nothing."""

    job_id: str
    worker: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One attempt a worker now holds the lease of."""

    id: str
    job_type: str
    queue: str
    attempt: int
    max_attempts: int
    payload: dict[str, Any]
    trace_context: dict[str, str]

    def leased_to(self, worker: str) -> Lease:
        """The fence this attempt's outcome is written under."""
        return Lease(self.id, worker, self.attempt)


@dataclass(frozen=True, slots=True)
class ReclaimedJob:
    """A running job whose lease expired, as the reclaim left it (``ready`` or ``dead``)."""

    id: str
    job_type: str
    queue: str
    state: str
    attempt: int
    max_attempts: int
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job row as operators and tests read it (``keel jobs show``)."""

    id: str
    queue: str
    job_type: str
    payload: dict[str, Any]
    state: str
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    unique_key: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    trace_context: dict[str, str]
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class QueueStats:
    queue: str
    depth: dict[JobState, int]
    oldest_ready_age_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON form ``keel jobs stats --json`` and the operator console answer."""
        return {
            "queue": self.queue,
            "depth": {state.value: count for state, count in self.depth.items()},
            "oldest_ready_age_seconds": self.oldest_ready_age_seconds,
        }


TransactionHook = Callable[["AsyncSession"], Awaitable[None]]
"""Work that must commit with a job's death (a job type's ``on_dead``): the SQL
stores run it in the transaction that marks the job dead."""

ReclaimHook = Callable[["AsyncSession", Sequence[ReclaimedJob]], Awaitable[None]]
"""Work that must commit with a reclaim: ``on_dead`` of the jobs it left dead."""


class JobInserter(Protocol):
    """Enqueues batches one after another on whatever the inserter holds (a
    connection, a caller's transaction); see :class:`keel.jobs.queue.Enqueuer`."""

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        """Add the jobs; one id per job in order, the key holder's for a taken ``unique_key``."""
        ...

    async def close(self) -> None: ...


class JobConnector(Protocol):
    """One queue store. Each method is one atomic step of the queue's life."""

    # --- enqueueing -----------------------------------------------------------

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        """Add the jobs, committed when this returns (see :meth:`JobInserter.insert`)."""
        ...

    def inserter(self) -> JobInserter:
        """An inserter for a run of enqueues (held until its ``close``)."""
        ...

    # --- the worker -----------------------------------------------------------

    async def claim(
        self,
        queue: str,
        limit: int,
        worker: str,
        now: datetime,
        lease_until: datetime,
        succeeded: Sequence[tuple[str, int]] = (),
    ) -> list[ClaimedJob]:
        """Lease up to ``limit`` due jobs of ``queue`` to ``worker`` (best priority,
        then oldest ``run_at``, first) and record the (id, attempt) pairs in
        ``succeeded`` as succeeded, in one atomic step."""
        ...

    async def succeed(
        self, succeeded: Sequence[tuple[str, int]], worker: str, now: datetime
    ) -> int:
        """Record finished attempts; returns how many ``worker`` still held."""
        ...

    async def fail(
        self,
        lease: Lease,
        *,
        state: JobState,
        run_at: datetime | None,
        error: str,
        now: datetime,
        on_dead: TransactionHook | None = None,
    ) -> bool:
        """A failed attempt to ``retrying`` (at ``run_at``) or ``dead``; ``on_dead``
        commits with it. ``False`` when the lease is gone (nothing written)."""
        ...

    async def defer(self, lease: Lease, *, run_at: datetime, reason: str) -> bool:
        """An attempt that could not try: ``retrying`` at ``run_at``, the attempt handed back."""
        ...

    async def renew(self, job_ids: Sequence[str], worker: str, lease_until: datetime) -> set[str]:
        """The heartbeat; returns the ids whose lease ``worker`` still holds."""
        ...

    async def release(self, job_ids: Sequence[str], worker: str) -> None:
        """Jobs a graceful stop interrupted back to ``ready``, the attempt handed back."""
        ...

    async def reclaim(
        self, now: datetime, on_dead: ReclaimHook | None = None
    ) -> list[ReclaimedJob]:
        """Running jobs whose lease expired: to ``ready``, or ``dead`` on their last
        attempt (``on_dead`` commits with those)."""
        ...

    async def schedule(
        self,
        name: str,
        slot: datetime,
        columns: JobColumns,
        now: datetime,
        trace_context: Mapping[str, str],
    ) -> str | None:
        """Move schedule ``name`` to ``slot`` and enqueue its one job, atomically;
        ``None`` when another worker already took the slot."""
        ...

    # --- reading and operating ------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        """One job; :class:`keel.errors.NotFound` when there is none."""
        ...

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        """Jobs, newest first."""
        ...

    async def stats(self, now: datetime) -> list[QueueStats]:
        """Depth per queue and state, and how long the oldest due job has waited."""
        ...

    async def cancel(self, job_id: str, now: datetime) -> None:
        """A queued job to ``cancelled``; :class:`IllegalTransition` otherwise."""
        ...

    async def requeue_dead(self, job_ids: Sequence[str] | None, now: datetime) -> list[str]:
        """Dead jobs (all with ``None``) back to ``ready`` with their attempts reset."""
        ...

    async def purge(
        self,
        states: Sequence[JobState],
        *,
        finished_before: datetime | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> int:
        """Delete jobs in ``states``: those named, or finished before the cutoff."""
        ...

    async def check(self) -> None:
        """Raise :class:`keel.jobs.errors.JobStoreUnavailable` unless the store answers."""
        ...

    # --- lifecycle ------------------------------------------------------------

    async def warm(self, connections: int) -> None:
        """Open what the worker's loops will need before the first claim (may do nothing)."""
        ...

    async def close(self) -> None:
        """Release what the connector opened itself."""
        ...


__all__ = [
    "LEASE_EXPIRED",
    "ClaimedJob",
    "JobColumns",
    "JobConnector",
    "JobInserter",
    "JobRecord",
    "Lease",
    "QueueStats",
    "ReclaimHook",
    "ReclaimedJob",
    "ResolvedJob",
    "TransactionHook",
]

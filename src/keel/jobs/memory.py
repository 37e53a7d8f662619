"""The job queue in memory: a real :class:`~keel.jobs.connector.JobConnector` without a database.

For tests and embedders that want the queue's behaviour — leases, fencing,
retries, dead-lettering, unique keys, cron slots — without a database; it passes
the same contract suite as the SQL stores. It lives and dies with its process
and serves one event loop: every method runs without awaiting in between its
reads and writes, so each step is atomic as a SQL statement is.

There is no caller's transaction to join: an ``enqueue`` into it commits at
once. Work that the SQL stores commit with a job's death (a job type's
``on_dead``) runs in a write transaction of ``database`` when one is given;
without one it cannot run, and is logged and skipped, as a failing hook is (the
job is dead either way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from keel.errors import NotFound
from keel.jobs.connector import (
    LEASE_EXPIRED,
    ClaimedJob,
    JobColumns,
    JobRecord,
    Lease,
    QueueStats,
    ReclaimedJob,
    ReclaimHook,
    TransactionHook,
)
from keel.jobs.states import QUEUED, JobState, check

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from keel.db.engine import Database

log = structlog.get_logger(__name__)

S = JobState
_CLAIMABLE = frozenset(state.value for state in QUEUED)


@dataclass(frozen=True, slots=True)
class _Schedule:
    last_slot: datetime | None = None
    last_job_id: str | None = None


class MemoryJobConnector:
    """Jobs in a dict, keyed by id; unique keys and schedules beside them."""

    def __init__(self, database: Database | None = None) -> None:
        self._database = database
        self._jobs: dict[str, JobRecord] = {}
        self._keys: dict[str, str] = {}
        self._schedules: dict[str, _Schedule] = {}

    # --- enqueueing -------------------------------------------------------------

    def _insert_now(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        ids: list[str] = []
        for index, job_id in enumerate(columns.ids):
            queue, job_type, payload, state, priority, attempts, run_at, key = columns.row(index)
            holder = self._keys.get(key) if key is not None else None
            if holder is not None:
                ids.append(holder)
                continue
            self._jobs[job_id] = JobRecord(
                id=job_id,
                queue=queue,
                job_type=job_type,
                payload=payload,
                state=state,
                priority=priority,
                attempt=0,
                max_attempts=attempts,
                run_at=run_at,
                unique_key=key,
                lease_owner=None,
                lease_expires_at=None,
                trace_context=dict(trace_context),
                last_error=None,
                created_at=now,
                started_at=None,
                finished_at=None,
            )
            if key is not None:
                self._keys[key] = job_id
            ids.append(job_id)
        return ids

    async def insert(
        self, columns: JobColumns, now: datetime, trace_context: Mapping[str, str]
    ) -> list[str]:
        return self._insert_now(columns, now, trace_context)

    def inserter(self) -> MemoryJobConnector:
        return self

    # --- the worker -------------------------------------------------------------

    def _held(self, lease: Lease) -> JobRecord | None:
        """The job if the lease still holds (the fence)."""
        job = self._jobs.get(lease.job_id)
        if (
            job is None
            or job.state != S.RUNNING.value
            or job.lease_owner != lease.worker
            or job.attempt != lease.attempt
        ):
            return None
        return job

    async def claim(
        self,
        queue: str,
        limit: int,
        worker: str,
        now: datetime,
        lease_until: datetime,
        succeeded: Sequence[tuple[str, int]] = (),
    ) -> list[ClaimedJob]:
        self._succeed_now(succeeded, worker, now)
        due = sorted(
            (
                job
                for job in self._jobs.values()
                if job.queue == queue and job.state in _CLAIMABLE and job.run_at <= now
            ),
            key=lambda job: (-job.priority, job.run_at, job.id),
        )[:limit]
        claimed: list[ClaimedJob] = []
        for job in due:
            check(JobState(job.state), S.RUNNING)
            taken = replace(
                job,
                state=S.RUNNING.value,
                attempt=job.attempt + 1,
                lease_owner=worker,
                lease_expires_at=lease_until,
                started_at=now,
            )
            self._jobs[job.id] = taken
            claimed.append(
                ClaimedJob(
                    id=taken.id,
                    job_type=taken.job_type,
                    queue=taken.queue,
                    attempt=taken.attempt,
                    max_attempts=taken.max_attempts,
                    payload=dict(taken.payload),
                    trace_context=dict(taken.trace_context),
                )
            )
        return claimed

    def _succeed_now(self, succeeded: Sequence[tuple[str, int]], worker: str, now: datetime) -> int:
        recorded = 0
        for job_id, attempt in succeeded:
            job = self._held(Lease(job_id, worker, attempt))
            if job is None:
                continue
            check(S.RUNNING, S.SUCCEEDED)
            self._jobs[job_id] = replace(
                job,
                state=S.SUCCEEDED.value,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                last_error=None,
            )
            recorded += 1
        return recorded

    async def succeed(
        self, succeeded: Sequence[tuple[str, int]], worker: str, now: datetime
    ) -> int:
        return self._succeed_now(succeeded, worker, now)

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
        if self._held(lease) is None:
            return False
        check(S.RUNNING, state)
        if on_dead is not None and state is S.DEAD:
            async with self._transaction() as session:
                if session is not None:
                    await on_dead(session)
        job = self._held(lease)
        if job is None:  # lost while the hook ran
            return False
        self._jobs[lease.job_id] = replace(
            job,
            state=state.value,
            run_at=run_at if run_at is not None else job.run_at,
            finished_at=now if state is S.DEAD else job.finished_at,
            lease_owner=None,
            lease_expires_at=None,
            last_error=error,
        )
        return True

    async def defer(self, lease: Lease, *, run_at: datetime, reason: str) -> bool:
        job = self._held(lease)
        if job is None:
            return False
        check(S.RUNNING, S.RETRYING)
        self._jobs[lease.job_id] = replace(
            job,
            state=S.RETRYING.value,
            attempt=job.attempt - 1,
            run_at=run_at,
            lease_owner=None,
            lease_expires_at=None,
            last_error=reason,
        )
        return True

    async def renew(self, job_ids: Sequence[str], worker: str, lease_until: datetime) -> set[str]:
        kept: set[str] = set()
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.state == S.RUNNING.value and job.lease_owner == worker:
                self._jobs[job_id] = replace(job, lease_expires_at=lease_until)
                kept.add(job_id)
        return kept

    async def release(self, job_ids: Sequence[str], worker: str) -> None:
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.state == S.RUNNING.value and job.lease_owner == worker:
                check(S.RUNNING, S.READY)
                self._jobs[job_id] = replace(
                    job,
                    state=S.READY.value,
                    attempt=job.attempt - 1,
                    lease_owner=None,
                    lease_expires_at=None,
                )

    async def reclaim(
        self, now: datetime, on_dead: ReclaimHook | None = None
    ) -> list[ReclaimedJob]:
        expired = [
            job
            for job in self._jobs.values()
            if job.state == S.RUNNING.value
            and job.lease_expires_at is not None
            and job.lease_expires_at < now
        ]
        reclaimed: list[ReclaimedJob] = []
        for job in expired:
            state = S.DEAD if job.attempt >= job.max_attempts else S.READY
            check(S.RUNNING, state)
            self._jobs[job.id] = replace(
                job,
                state=state.value,
                finished_at=now if state is S.DEAD else None,
                run_at=now,
                lease_owner=None,
                lease_expires_at=None,
                last_error=LEASE_EXPIRED,
            )
            reclaimed.append(
                ReclaimedJob(
                    id=job.id,
                    job_type=job.job_type,
                    queue=job.queue,
                    state=state.value,
                    attempt=job.attempt,
                    max_attempts=job.max_attempts,
                    payload=dict(job.payload),
                )
            )
        dead = [job for job in reclaimed if job.state == S.DEAD.value]
        if on_dead is not None and dead:
            async with self._transaction() as session:
                if session is not None:
                    await on_dead(session, dead)
        return reclaimed

    async def schedule(
        self,
        name: str,
        slot: datetime,
        columns: JobColumns,
        now: datetime,
        trace_context: Mapping[str, str],
    ) -> str | None:
        current = self._schedules.get(name, _Schedule())
        if current.last_slot is not None and current.last_slot >= slot:
            return None
        (job_id,) = self._insert_now(columns, now, trace_context)
        self._schedules[name] = _Schedule(last_slot=slot, last_job_id=job_id)
        return job_id

    # --- reading and operating --------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        chosen = [
            job
            for job in self._jobs.values()
            if (state is None or job.state == state.value)
            and (queue is None or job.queue == queue)
            and (job_type is None or job.job_type == job_type)
        ]
        return sorted(chosen, key=lambda job: job.id, reverse=True)[:limit]

    async def stats(self, now: datetime) -> list[QueueStats]:
        depth: dict[str, dict[JobState, int]] = {}
        oldest: dict[str, datetime] = {}
        for job in self._jobs.values():
            counts = depth.setdefault(job.queue, {})
            counts[JobState(job.state)] = counts.get(JobState(job.state), 0) + 1
            if job.state in _CLAIMABLE and job.run_at <= now:
                first = oldest.get(job.queue)
                oldest[job.queue] = job.run_at if first is None else min(first, job.run_at)
        return [
            QueueStats(
                queue,
                depth[queue],
                max(0.0, (now - oldest[queue]).total_seconds()) if queue in oldest else 0.0,
            )
            for queue in sorted(depth)
        ]

    async def cancel(self, job_id: str, now: datetime) -> None:
        job = await self.get(job_id)
        check(JobState(job.state), S.CANCELLED)
        self._jobs[job_id] = replace(job, state=S.CANCELLED.value, finished_at=now)

    async def requeue_dead(self, job_ids: Sequence[str] | None, now: datetime) -> list[str]:
        if job_ids is not None:
            for job_id in job_ids:
                check(JobState((await self.get(job_id)).state), S.READY)
        chosen = list(self._jobs) if job_ids is None else list(job_ids)
        requeued: list[str] = []
        for job_id in chosen:
            job = self._jobs[job_id]
            if job.state == S.DEAD.value:
                self._jobs[job_id] = replace(
                    job, state=S.READY.value, attempt=0, run_at=now, finished_at=None
                )
                requeued.append(job_id)
        return requeued

    async def purge(
        self,
        states: Sequence[JobState],
        *,
        finished_before: datetime | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> int:
        if job_ids is None and finished_before is None:
            raise ValueError("purge needs job ids or a cutoff")
        values = {state.value for state in states}
        chosen = [
            job
            for job in self._jobs.values()
            if job.state in values
            and (job_ids is None or job.id in job_ids)
            and (
                finished_before is None
                or (job.finished_at is not None and job.finished_at < finished_before)
            )
        ]
        for job in chosen:
            del self._jobs[job.id]
            if job.unique_key is not None:
                self._keys.pop(job.unique_key, None)
        return len(chosen)

    async def check(self) -> None:
        return None

    # --- lifecycle ---------------------------------------------------------------

    async def warm(self, connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession | None]:
        if self._database is None:
            log.error("job_dead_hook_skipped", reason="the memory job store has no database")
            yield None
            return
        async with self._database.write() as session:
            yield session


__all__ = ["MemoryJobConnector"]

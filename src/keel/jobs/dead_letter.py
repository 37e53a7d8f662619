"""Dead-lettering: what follows when a job goes ``dead``.

A job dies when an attempt fails for good (its last attempt, or a
:class:`~keel.jobs.errors.PermanentJobError`) or when its lease expires on its
last attempt (its worker died). The worker decides that; this module is what
dying does. The job type's ``on_dead`` hook runs in the transaction that marks
the job dead (the store runs it: ``JobConnector.fail`` and ``reclaim``), so a
domain row that tracks the job (an export) never says the work is still going on.
Once that has committed, the dead-job counter moves and ``job.dead_lettered``
goes to the audit log's system chain. The job itself stays
in the table until an operator requeues it (``keel jobs dead requeue``).

Everything a letter needs beyond its job type's hook (the database, the auditor)
comes from the worker's resources that the letter carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from keel.audit import AuditEvent, EventCode
from keel.jobs.connector import LEASE_EXPIRED, ReclaimedJob, TransactionHook
from keel.jobs.metrics import JobMetrics
from keel.jobs.registry import DeadHook, DeadLetter, JobContext, JobResources, Registry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)

MAX_AUDITED_ERROR_CHARS = 500


def lease_expired(row: ReclaimedJob, resources: JobResources) -> DeadLetter:
    """The letter of a job that a reclaim found dead: its worker died on the last attempt."""
    job = JobContext(
        job_id=row.id,
        job_type=row.job_type,
        queue=row.queue,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        payload=dict(row.payload or {}),
        resources=resources,
    )
    return DeadLetter(job, "lease expired", LEASE_EXPIRED)


class DeadLetters:
    """Runs the ``on_dead`` hooks of a worker's job types and reports each dead job."""

    def __init__(self, registry: Registry, metrics: JobMetrics) -> None:
        self.registry = registry
        self._metrics = metrics

    def _hook(self, job_type: str) -> DeadHook | None:
        return self.registry.get(job_type).on_dead if job_type in self.registry else None

    def hook_for(self, letter: DeadLetter | None) -> TransactionHook | None:
        """What the store runs in the transaction that marks ``letter``'s job dead:
        its type's ``on_dead`` (``None`` when the job is not dying or has none)."""
        if letter is None or self._hook(letter.job.job_type) is None:
            return None

        async def on_dead(session: AsyncSession) -> None:
            await self.run_hook(session, letter)

        return on_dead

    async def run_hook(self, session: AsyncSession, letter: DeadLetter) -> None:
        """Run the job type's ``on_dead`` (if it has one) in a savepoint of ``session``."""
        hook = self._hook(letter.job.job_type)
        if hook is None:
            return
        try:
            async with session.begin_nested():
                await hook(session, letter)
        except Exception:  # the job is dead either way; see DeadHook
            log.exception(
                "job_dead_hook_failed", job_id=letter.job.job_id, job_type=letter.job.job_type
            )

    async def dead_lettered(self, letter: DeadLetter) -> None:
        """After the job's death committed: count it, and audit ``job.dead_lettered``.

        The audit goes on the system chain and never fails the worker.
        """
        job = letter.job
        self._metrics.jobs_dead.labels(job.job_type).inc()
        event = AuditEvent(
            EventCode.JOB_DEAD_LETTERED,
            fields={
                "job_id": job.job_id,
                "queue": job.queue,
                "task": job.job_type,
                "attempts": job.attempt,
                "error": letter.error[:MAX_AUDITED_ERROR_CHARS],
            },
        )
        try:
            await job.resources.audit.record_now(event)
        except Exception:
            log.exception("job_dead_audit_failed", job_id=job.job_id)

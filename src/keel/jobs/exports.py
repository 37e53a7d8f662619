"""The export job: produces an export's file on the ``exports`` queue.

Enqueued in the transaction that records the export, so an export never exists
without its job. Idempotent across retries and worker deaths: the domain's
conditional claim (``reclaim_running``) takes over a run whose worker died, its
fenced final write lets only the latest run finish the export, and a finished
export is left alone. "Export ready" is enqueued in the transaction that marks
the export succeeded; when the job goes dead, :func:`fail_export` marks the
export failed in the transaction that dead-letters the job.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.tables import Export
from keel.domain import exports
from keel.jobs.notifications import enqueue_export_ready
from keel.jobs.queue import enqueue
from keel.jobs.registry import DeadLetter, JobContext, JobType
from keel.jobs.retry import RetryPolicy


async def run_export(context: JobContext) -> None:
    resources = context.resources

    async def ready(session: AsyncSession, row: Export) -> None:
        await enqueue_export_ready(session, row, clock=resources.clock)

    await exports.run(
        resources.database,
        resources.store,
        str(context.payload["export_id"]),
        clock=resources.clock,
        reclaim_running=True,
        final=context.is_last_attempt,
        on_succeeded=ready,
        audit=resources.audit,
    )


async def fail_export(session: AsyncSession, letter: DeadLetter) -> None:
    """``on_dead``: the export's job is dead, so the export will never finish.

    Whatever killed the last attempt — a failure ``run`` could not record (the
    store refused to open a blob, a timeout), or a worker that died holding the
    lease — the export must not stay ``running`` for ever: it becomes ``failed``
    in the transaction that dead-letters the job, with a reason the API shows.
    """
    resources = letter.job.resources
    await exports.fail_abandoned(
        session,
        str(letter.job.payload["export_id"]),
        f"the export job failed on its last attempt ({letter.job.attempt}): {letter.cause}",
        clock=resources.clock,
        audit=resources.audit,
    )


EXPORT = JobType(
    "exports.run",
    run_export,
    queue="exports",
    retry=RetryPolicy(max_attempts=5, base_seconds=5.0, cap_seconds=300.0),
    timeout_seconds=1800.0,
    on_dead=fail_export,
)


async def enqueue_export(
    session: AsyncSession, export_id: str, *, clock: Clock = SYSTEM_CLOCK
) -> str:
    """Queue the production of ``export_id`` in the caller's transaction."""
    return await enqueue(
        session, EXPORT, {"export_id": export_id}, unique_key=f"export:{export_id}", clock=clock
    )

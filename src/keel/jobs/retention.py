"""The queue's own housekeeping: purge succeeded and cancelled jobs past retention."""

from __future__ import annotations

from datetime import timedelta

import structlog

from keel.jobs.queue import purge_finished
from keel.jobs.registry import JobContext, JobType, Periodic

log = structlog.get_logger(__name__)


async def purge_finished_jobs(context: JobContext) -> None:
    resources = context.resources
    retention = timedelta(hours=resources.settings.jobs_retention_hours)
    count = await purge_finished(resources.database, older_than=retention, clock=resources.clock)
    log.info("jobs_purged", count=count, retention_hours=retention.total_seconds() / 3600)


PURGE_FINISHED = JobType("jobs.purge_finished", purge_finished_jobs, queue="default")
PURGE_SCHEDULE = Periodic("purge-finished-jobs", "17 * * * *", PURGE_FINISHED.name)

"""The job type the SIGKILL test's real worker processes load (``KEEL_JOBS_MODULES``).

Each attempt records itself in ``job_runs`` (primary key: job id and attempt)
before and after its work, each in its own committed transaction, so the test
can see which process ran what, and when, even for processes it killed.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text

from keel.jobs.registry import JobContext, JobType
from keel.jobs.retry import RetryPolicy

SETUP = """
CREATE TABLE IF NOT EXISTS job_runs (
    job_id text NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS job_run_conflicts (job_id text, attempt integer, pid integer);
"""


async def record_run(context: JobContext) -> None:
    database = context.resources.database
    key = {"job_id": context.job_id, "attempt": context.attempt, "pid": os.getpid()}
    async with database.write() as session:
        inserted = await session.execute(
            text(
                "INSERT INTO job_runs (job_id, attempt, pid) VALUES (:job_id, :attempt, :pid) "
                "ON CONFLICT DO NOTHING RETURNING job_id"
            ),
            key,
        )
        if inserted.first() is None:
            await session.execute(
                text("INSERT INTO job_run_conflicts VALUES (:job_id, :attempt, :pid)"), key
            )
    await asyncio.sleep(float(context.payload.get("work_seconds", 0.01)))
    async with database.write() as session:
        await session.execute(
            text(
                "UPDATE job_runs SET finished_at = clock_timestamp() "
                "WHERE job_id = :job_id AND attempt = :attempt AND pid = :pid"
            ),
            key,
        )


RECORD_RUN = JobType("fault.record_run", record_run, queue="fault", retry=RetryPolicy(50, 0.0, 0.0))
JOB_TYPES = (RECORD_RUN,)

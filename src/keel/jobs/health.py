"""The job store's readiness check, for ``/ready``."""

from __future__ import annotations

from keel.db.engine import Database
from keel.jobs.connector import JobConnector
from keel.jobs.queue import connector_for


async def check_job_store(store: Database | JobConnector) -> None:
    """Raise :class:`~keel.jobs.errors.JobStoreUnavailable` unless the job store answers a read."""
    await connector_for(store).check()

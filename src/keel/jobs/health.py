"""The job store's readiness check, for ``/ready``."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from keel.db.engine import Database
from keel.errors import DatabaseUnavailable
from keel.jobs.errors import JobStoreUnavailable
from keel.jobs.queries import jobs


async def check_job_store(database: Database) -> None:
    """Raise :class:`JobStoreUnavailable` unless the jobs table answers a read."""
    try:
        async with database.read() as session:
            await session.execute(select(jobs.c.id).limit(1))
    except (DatabaseUnavailable, SQLAlchemyError) as error:
        detail = f"the job store cannot be read: {type(error).__name__}"
        raise JobStoreUnavailable(detail) from error

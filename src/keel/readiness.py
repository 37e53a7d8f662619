"""Readiness checks contributed by parts built after the observability layer.

``/ready`` already checks the database, the schema, storage and Redis;
here the job store joins as a critical check and the rate limiter as
an optional one that reports ``warn`` while it decides locally because Redis is
unusable — degraded, never down.
"""

from __future__ import annotations

from keel.db.engine import Database
from keel.guard.wiring import LimitsParts
from keel.jobs.health import check_job_store
from keel.observe import HealthCheck, HealthRegistry, Observation, Status


def register_readiness_checks(
    health: HealthRegistry, database: Database, limits: LimitsParts, *, shared: bool
) -> None:
    """``shared``: the limits are kept in Redis (``KEEL_REDIS_URL`` is set)."""

    async def job_store() -> Observation | None:
        await check_job_store(database)
        return None

    async def ratelimit() -> Observation:
        if limits.degraded:
            return Observation(
                value="local",
                status=Status.WARN,
                output="Redis unusable: limits decided per process (a local share of each limit)",
            )
        return Observation(value="shared" if shared else "local")

    health.register(HealthCheck("jobs", "datastore", "responseTime", job_store))
    health.register(HealthCheck("ratelimit", "component", "mode", ratelimit, critical=False))

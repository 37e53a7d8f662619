"""Readiness checks contributed by parts built after the observability layer.

``/ready`` already checks the database, the schema, storage and Redis;
here the job store joins as a critical check and the rate limiter as
an optional one that reports ``warn`` while it decides locally because Redis is
unusable — degraded, never down.
"""

from __future__ import annotations

from keel.api.services import Services
from keel.jobs.health import check_job_store
from keel.observe import HealthCheck, Observation, Status


def register_readiness_checks(services: Services) -> None:
    database = services.database
    limits = services.limits

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
        return Observation(value="shared" if services.settings.redis_url else "local")

    services.health.register(HealthCheck("jobs", "datastore", "responseTime", job_store))
    services.health.register(
        HealthCheck("ratelimit", "component", "mode", ratelimit, critical=False)
    )

"""The readiness checks Keel itself provides: database, schema, file storage, Redis.

Other parts register theirs on ``services.health`` (the job store, the Redis
limiter's degraded mode, breaker states) with :class:`~keel.observe.health.HealthCheck`.
"""

from __future__ import annotations

import redis.asyncio as redis

from keel import migrations
from keel.db.engine import Database
from keel.migrations.script.graph import Scripts
from keel.observe.health import HealthCheck, Observation, Status
from keel.storage import BlobStore


def database_check(database: Database) -> HealthCheck:
    async def probe() -> Observation | None:
        await database.ping()
        return None

    return HealthCheck("database", "datastore", "responseTime", probe)


def schema_check(database: Database) -> HealthCheck:
    """At the code's head, or behind it by contract revisions only (they run once this
    release is promoted). The scripts are read here, once: reading them imports every
    revision file, which on a loaded machine outlasted the probe's timeout (and held the
    event loop while it did)."""
    scripts = Scripts()
    head = scripts.head
    contract_only = migrations.contract_only_revisions(scripts)

    async def probe() -> Observation:
        current = await migrations.current_revision(database)
        if current == head:
            return Observation(value=current, status=Status.PASS)
        if current in contract_only:
            return Observation(
                value=current,
                status=Status.PASS,
                output=f"contract revisions up to {head} pending: they run after promotion",
            )
        return Observation(
            value=current or "nothing",
            status=Status.FAIL,
            output=f"schema behind: at {current or 'nothing'}, the code needs {head}",
        )

    return HealthCheck("schema", "datastore", "revision", probe)


def storage_check(store: BlobStore) -> HealthCheck:
    """File storage is a degraded dependency, never a reason to leave the rotation.

    Without it an instance still serves everything but file bytes, and storage is
    shared: when it fails it fails for every instance at once, so a load balancer
    draining on ``/ready`` would remove the whole fleet. It reports ``warn`` (200),
    as Redis does; only what an instance cannot serve at all (its database, its
    schema, its job store) makes ``/ready`` fail. The probe goes through the
    ``storage`` dependency, so readiness polls double as the breaker's probes.
    """

    async def probe() -> Observation | None:
        await store.probe()
        return None

    return HealthCheck("storage", "datastore", "responseTime", probe, critical=False)


def redis_check(url: str) -> HealthCheck:
    """Redis is optional: Keel keeps serving on local fallbacks, so a failure only warns."""

    async def probe() -> Observation | None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            await client.ping()
        finally:
            await client.aclose()
        return None

    return HealthCheck("redis", "datastore", "responseTime", probe, critical=False)

"""Periodic upkeep owned by other parts of Keel, run once per schedule by any worker.

- purge expired idempotency keys: keys are kept for their retention,
  then removed in batches;
- seal the audit log's open tails with signed digests, so tampering
  with recent events is caught without waiting for the next automatic digest.
"""

from __future__ import annotations

import structlog

from keel.guard.idempotency import purge_expired
from keel.jobs.registry import JobContext, JobType, Periodic

log = structlog.get_logger(__name__)


async def purge_idempotency_keys(context: JobContext) -> None:
    resources = context.resources
    purged = await purge_expired(resources.database, resources.clock.now())
    log.info("idempotency_keys_purged", purged=purged)


async def seal_audit_log(context: JobContext) -> None:
    digests = await context.resources.audit.seal_all()
    log.info("audit_digests_sealed", digests=len(digests))


PURGE_IDEMPOTENCY = JobType("idempotency.purge", purge_idempotency_keys, queue="default")
PURGE_IDEMPOTENCY_SCHEDULE = Periodic(
    "purge-idempotency-keys", "*/10 * * * *", PURGE_IDEMPOTENCY.name
)
SEAL_AUDIT = JobType("audit.seal", seal_audit_log, queue="default")
SEAL_AUDIT_SCHEDULE = Periodic("seal-audit-log", "*/15 * * * *", SEAL_AUDIT.name)

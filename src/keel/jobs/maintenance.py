"""Periodic upkeep owned by other parts of Keel, run once per schedule by any worker.

- purge expired idempotency keys: keys are kept for their retention,
  then removed in batches;
- seal the audit log's open tails with signed digests, so tampering
  with recent events is caught without waiting for the next automatic digest;
- collect abandoned blob writes: temporary files and unfinished multipart uploads
  that a crash or an outage kept an upload's own abort from removing;
- prune SLO rollups older than the longest SLO period plus a day (what
  ``keel slo report`` reads never needs more).
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from keel.errors import KeelError
from keel.guard.idempotency import purge_expired
from keel.jobs.registry import JobContext, JobType, Periodic
from keel.observe.metrics import request_histogram
from keel.slo import load_objectives
from keel.slo.rollup import prune, retention

log = structlog.get_logger(__name__)


async def purge_idempotency_keys(context: JobContext) -> None:
    resources = context.resources
    purged = await purge_expired(resources.database, resources.clock.now())
    log.info("idempotency_keys_purged", purged=purged)


async def seal_audit_log(context: JobContext) -> None:
    digests = await context.resources.audit.seal_all()
    log.info("audit_digests_sealed", digests=len(digests))


# Far longer than any upload can take (the per-call storage timeout bounds each part).
ABANDONED_AFTER = timedelta(hours=6)


async def collect_abandoned_writes(context: JobContext) -> None:
    resources = context.resources
    removed = await resources.store.collect_abandoned(resources.clock.now() - ABANDONED_AFTER)
    log.info("abandoned_writes_collected", removed=removed)


PURGE_IDEMPOTENCY = JobType("idempotency.purge", purge_idempotency_keys, queue="default")
PURGE_IDEMPOTENCY_SCHEDULE = Periodic(
    "purge-idempotency-keys", "*/10 * * * *", PURGE_IDEMPOTENCY.name
)
SEAL_AUDIT = JobType("audit.seal", seal_audit_log, queue="default")
SEAL_AUDIT_SCHEDULE = Periodic("seal-audit-log", "*/15 * * * *", SEAL_AUDIT.name)
COLLECT_ABANDONED = JobType("storage.collect", collect_abandoned_writes, queue="default")
COLLECT_ABANDONED_SCHEDULE = Periodic(
    "collect-abandoned-writes", "17 * * * *", COLLECT_ABANDONED.name
)


async def prune_slo_rollups(context: JobContext) -> None:
    resources = context.resources
    settings = resources.settings
    try:
        objectives = load_objectives(
            settings.slo_file, request_histogram(settings.slo_latency_seconds)
        )
    except KeelError:
        objectives = ()  # a refused file: keep the default period's worth
    kept = retention(objectives)
    removed = await prune(resources.database, resources.clock.now() - kept)
    log.info("slo_rollups_pruned", removed=removed, kept_days=kept.total_seconds() / 86400)


PRUNE_SLO_ROLLUPS = JobType("slo.prune_rollups", prune_slo_rollups, queue="default")
PRUNE_SLO_ROLLUPS_SCHEDULE = Periodic("prune-slo-rollups", "23 * * * *", PRUNE_SLO_ROLLUPS.name)

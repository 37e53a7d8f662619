"""Keel's job types and periodic jobs, assembled into a worker's registry.

Adding a job type or a schedule is one line in the tuples below (or a module
named in ``KEEL_JOBS_MODULES`` exposing ``JOB_TYPES``/``PERIODIC``).
"""

from __future__ import annotations

from keel.jobs import exports, maintenance, notifications, retention
from keel.jobs.registry import JobType, Periodic, Registry
from keel.settings import Settings
from keel.synthetic.job import SYNTHETIC_CHECK, SYNTHETIC_CHECK_SCHEDULE

JOB_TYPES: tuple[JobType, ...] = (
    exports.EXPORT,
    notifications.EXPORT_READY,
    notifications.QUOTA_WARNING,
    retention.PURGE_FINISHED,
    maintenance.PURGE_IDEMPOTENCY,
    maintenance.SEAL_AUDIT,
    maintenance.COLLECT_ABANDONED,
    maintenance.PRUNE_SLO_ROLLUPS,
    SYNTHETIC_CHECK,
)

PERIODIC: tuple[Periodic, ...] = (
    retention.PURGE_SCHEDULE,
    maintenance.PURGE_IDEMPOTENCY_SCHEDULE,
    maintenance.SEAL_AUDIT_SCHEDULE,
    maintenance.COLLECT_ABANDONED_SCHEDULE,
    maintenance.PRUNE_SLO_ROLLUPS_SCHEDULE,
)


def build_registry(settings: Settings) -> Registry:
    registry = Registry(JOB_TYPES, PERIODIC)
    if settings.synthetic_target_url:  # the service's own URL: only the operator knows it
        registry.add_periodic(SYNTHETIC_CHECK_SCHEDULE)
    for module in (name.strip() for name in settings.jobs_modules.split(",")):
        if module:
            registry.add_module(module)
    registry.check()
    return registry

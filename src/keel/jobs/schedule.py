"""Periodic jobs: each cron slot enqueues its job once, whatever the worker count.

Every worker ticks; a tick computes each schedule's latest slot and, in one write
transaction, moves the schedule's ``last_slot`` forward with a conditional update
and enqueues the job. Of any number of workers ticking at once, exactly one sees
its update change a row, so exactly one enqueues; the job's ``unique_key``
(``periodic:NAME:SLOT``) guards the same slot a second time. Missed slots are not
replayed: after downtime the schedule runs once, for the latest slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog

from keel.ids import new_ids
from keel.jobs.connector import JobConnector
from keel.jobs.queue import NewJob, current_trace_context, job_columns
from keel.jobs.registry import Periodic, Registry

log = structlog.get_logger(__name__)


def slot_key(schedule: Periodic, slot: datetime) -> str:
    return f"periodic:{schedule.name}:{slot.isoformat()}"


async def tick(
    connector: JobConnector, registry: Registry, schedules: Iterable[Periodic], now: datetime
) -> list[str]:
    """Enqueue every schedule whose latest slot no worker has claimed yet; returns job ids.

    The job is stamped with the tick's ``now``.
    """
    enqueued: list[str] = []
    for schedule in schedules:
        job_type = registry.get(schedule.job_type)
        slot = schedule.latest_slot(now)
        job = NewJob(
            job_type,
            {**schedule.payload, "slot": slot.isoformat()},
            unique_key=slot_key(schedule, slot),
        )
        columns = job_columns([job], new_ids(1), now)
        job_id = await connector.schedule(
            schedule.name, slot, columns, now, current_trace_context()
        )
        if job_id is None:
            continue
        log.info("periodic_job_enqueued", schedule=schedule.name, slot=slot.isoformat())
        enqueued.append(job_id)
    return enqueued


__all__ = ["slot_key", "tick"]

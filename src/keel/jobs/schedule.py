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

from keel.db.engine import Database
from keel.jobs import queries
from keel.jobs.queue import enqueue
from keel.jobs.registry import Periodic, Registry

log = structlog.get_logger(__name__)


def slot_key(schedule: Periodic, slot: datetime) -> str:
    return f"periodic:{schedule.name}:{slot.isoformat()}"


async def tick(
    database: Database, registry: Registry, schedules: Iterable[Periodic], now: datetime
) -> list[str]:
    """Enqueue every schedule whose latest slot no worker has claimed yet; returns job ids."""
    enqueued: list[str] = []
    for schedule in schedules:
        job_type = registry.get(schedule.job_type)
        slot = schedule.latest_slot(now)
        async with database.write() as session:
            await session.execute(queries.ensure_schedule(database.dialect, schedule.name))
            claimed = await session.execute(queries.claim_slot(schedule.name, slot))
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            job_id = await enqueue(
                session,
                job_type,
                {**schedule.payload, "slot": slot.isoformat()},
                unique_key=slot_key(schedule, slot),
                clock=_At(now),
            )
            await session.execute(queries.record_slot_job(schedule.name, job_id))
        log.info("periodic_job_enqueued", schedule=schedule.name, slot=slot.isoformat())
        enqueued.append(job_id)
    return enqueued


class _At:
    """A clock stopped at the tick's ``now``, so the job is stamped with the tick's time."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:  # pragma: no cover - enqueue reads only now()
        return 0.0


__all__ = ["slot_key", "tick"]

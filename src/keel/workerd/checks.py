"""The readiness checks of a worker process and of the autoscaling supervisor.

A worker is ready when it can do its work: its database answers, the schema is
the code's, the job store can be read, and its lease loop runs — the heartbeat
that renews the leases of running jobs. A heartbeat older than a lease means
running jobs are about to be taken back by other workers: that process is no
longer doing its share, whatever its database says.
"""

from __future__ import annotations

from collections.abc import Callable

from keel.clock import Clock
from keel.db.engine import Database
from keel.jobs.health import check_job_store
from keel.jobs.worker import Worker
from keel.observe.health import HealthCheck, Observation, Status


class ObservedWorker(Worker):
    """A :class:`~keel.jobs.worker.Worker` that notes when its lease loop last ran."""

    heartbeat_at: float | None = None  # monotonic; set by each heartbeat

    async def heartbeat(self) -> set[str]:
        lost = await super().heartbeat()
        self.heartbeat_at = self.resources.clock.monotonic()
        return lost


def job_store_check(database: Database, queues: dict[str, int]) -> HealthCheck:
    """The jobs table answers a read; reports the queues served, with their concurrency."""
    served = ",".join(f"{name}={count}" for name, count in sorted(queues.items()))

    async def probe() -> Observation:
        await check_job_store(database)
        return Observation(value=served)

    return HealthCheck("jobs", "datastore", "queues", probe)


def lease_loop_check(
    heartbeat_at: Callable[[], float | None], lease_seconds: float, clock: Clock
) -> HealthCheck:
    """The heartbeat (last run at ``heartbeat_at()``, monotonic) ran within one lease;
    it runs every third of one."""

    async def probe() -> Observation:
        beat = heartbeat_at()
        if beat is None:
            return Observation(value="starting", status=Status.FAIL, output="no heartbeat yet")
        age = round(max(0.0, clock.monotonic() - beat), 3)
        if age > lease_seconds:
            output = f"last heartbeat {age:g}s ago, past the {lease_seconds:g}s lease"
            return Observation(value=age, unit="s", status=Status.FAIL, output=output)
        return Observation(value=age, unit="s")

    return HealthCheck("leases", "component", "heartbeatAge", probe)

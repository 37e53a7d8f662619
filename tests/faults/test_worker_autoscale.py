"""``keel worker --autoscale 1..3`` on PostgreSQL: restart, scale up, drain, scale down, stop.

A real supervisor with short test settings. A child killed with SIGKILL is
started again (counted); a burst of jobs makes it scale up to MAX quickly; the
burst is worked off by several processes; once the backlog has stayed low for
the down window, it steps back down to MIN, one process at a time; SIGTERM then
drains every child and the supervisor exits 0. Each wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.support.databases import Templates, fresh_database
from tests.support.jobs_fault import RECORD_RUN
from tests.support.worker_processes import (
    WorkerProcess,
    keel_worker,
    prepare_fault_tables,
    wait_for,
    worker_env,
)

from keel.db.engine import Database
from keel.jobs import queue
from keel.jobs.states import JobState

pytestmark = [pytest.mark.postgres, pytest.mark.fault, pytest.mark.e2e]

BURST = 48
SETTINGS = {
    "KEEL_WORKER_AUTOSCALE_INTERVAL_SECONDS": "0.25",
    "KEEL_WORKER_AUTOSCALE_JOBS_PER_PROCESS": "4",
    "KEEL_WORKER_AUTOSCALE_MAX_AGE_SECONDS": "2",
    "KEEL_WORKER_AUTOSCALE_UP_COOLDOWN_SECONDS": "0",
    "KEEL_WORKER_AUTOSCALE_DOWN_COOLDOWN_SECONDS": "0.5",
    "KEEL_WORKER_AUTOSCALE_DOWN_WINDOW_SECONDS": "1.5",
    "KEEL_HEALTH_CACHE_SECONDS": "0",
}


@pytest.fixture
def pg_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


def gauge(worker: WorkerProcess, name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
    return worker.samples().get((name, labels), -1.0)


async def _burst(url: str) -> None:
    database = Database(url)
    try:
        await prepare_fault_tables(database)
        async with database.write() as session:
            await queue.Enqueuer(session).enqueue_many(
                [queue.NewJob(RECORD_RUN, {"work_seconds": 0.4}) for _ in range(BURST)]
            )
    finally:
        await database.dispose()


async def _fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    database = Database(url)
    try:
        async with database.read() as session:
            return [tuple(row) for row in await session.execute(text(sql))]
    finally:
        await database.dispose()


def _succeeded(url: str) -> int:
    rows = asyncio.run(
        _fetch(url, f"SELECT count(*) FROM jobs WHERE state = '{JobState.SUCCEEDED.value}'")
    )
    return int(str(rows[0][0]))


def test_autoscale_restarts_scales_up_drains_and_scales_down(pg_url: str, tmp_path: Path) -> None:
    env = worker_env(pg_url, tmp_path, SETTINGS)
    with keel_worker(env, tmp_path, ["--queues", "fault=2", "--autoscale", "1..3"]) as supervisor:
        wait_for(lambda: gauge(supervisor, "keel_worker_processes") == 1, 30, "one process")
        assert supervisor.get("/ready").json()["checks"]["processes:count"][0]["observedValue"] == 1

        # A child that dies is started again, and counted.
        first = supervisor.events("worker_process_started")[0]["pid"]
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: gauge(supervisor, "keel_worker_process_restarts_total") == 1,
            30,
            "the restart to be counted",
            supervisor,
        )
        wait_for(lambda: gauge(supervisor, "keel_worker_processes") == 1, 30, "one process again")

        asyncio.run(_burst(pg_url))
        wait_for(
            lambda: gauge(supervisor, "keel_worker_processes") == 3,
            30,
            "a scale-up to MAX",
            supervisor,
        )
        wait_for(lambda: _succeeded(pg_url) == BURST, 90, "the burst to be worked off", supervisor)
        wait_for(
            lambda: gauge(supervisor, "keel_worker_processes") == 1,
            30,
            "a scale-down to MIN",
            supervisor,
        )
        samples = supervisor.samples()
        assert samples[("keel_worker_scale_events_total", (("direction", "up"),))] >= 1
        assert samples[("keel_worker_scale_events_total", (("direction", "down"),))] >= 2
        done = (("job_type", RECORD_RUN.name), ("outcome", "succeeded"))
        assert samples[("keel_job_duration_seconds_count", done)] == BURST  # summed over children
        depth = samples[("keel_jobs_queue_depth", (("queue", "fault"), ("state", "succeeded")))]
        assert depth in (0.0, float(BURST))  # read from the database (cached up to 5 s)

        scaled = supervisor.events("worker_scaled")
        assert scaled[0]["direction"] == "up"
        downs = [event for event in scaled if event["direction"] == "down"]
        assert all(e["processes_before"] - e["processes_after"] == 1 for e in downs)

        pids = asyncio.run(_fetch(pg_url, "SELECT DISTINCT pid FROM job_runs"))
        assert len(pids) >= 2, "the burst ran in one process only"
        started = [event["pid"] for event in supervisor.events("worker_process_started")]

        supervisor.terminate()
        assert supervisor.process.wait(timeout=40) == 0
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every child was drained and reaped


def test_children_drain_by_themselves_when_the_supervisor_is_killed(
    pg_url: str, tmp_path: Path
) -> None:
    env = worker_env(pg_url, tmp_path, SETTINGS)
    with keel_worker(env, tmp_path, ["--queues", "fault=1", "--autoscale", "1..1"]) as supervisor:
        wait_for(lambda: bool(supervisor.events("worker_started")), 30, "the child", supervisor)
        child = supervisor.events("worker_process_started")[0]["pid"]
        os.kill(supervisor.process.pid, signal.SIGKILL)  # no drain, no forwarded SIGTERM
        supervisor.process.wait(timeout=10)
        wait_for(
            lambda: bool(supervisor.events("worker_stopped")), 30, "the orphan to stop", supervisor
        )
        assert (
            supervisor.events("worker_supervisor_gone")[0]["supervisor"] == supervisor.process.pid
        )
    wait_for(lambda: not _alive(child), 10, "the orphan to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

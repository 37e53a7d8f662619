"""SIGKILL real ``keel worker`` processes while they work through 1,000 jobs on PostgreSQL.

Every job must end succeeded (none lost), and no job may ever run in two
processes at once: a job's runs, ordered by start, never overlap, except that a
run of a killed process ends when that process was killed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.support.databases import Templates, fresh_database
from tests.support.jobs_fault import RECORD_RUN, SETUP

from keel.db.engine import Database
from keel.jobs import queue
from keel.jobs.states import JobState

pytestmark = [pytest.mark.postgres, pytest.mark.fault]

JOBS = 1000
KILLS = 4
REPO = Path(__file__).resolve().parents[2]
KEEL = Path(sys.executable).parent / "keel"


@pytest.fixture
def pg_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


def start_worker(url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        # This checkout's code (src) and its tests package, whatever keel is installed.
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "KEEL_DATABASE_URL": url,
        "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
        "KEEL_JOBS_MODULES": "tests.support.jobs_fault",
        "KEEL_JOBS_LEASE_SECONDS": "4",
        "KEEL_JOBS_GRACE_SECONDS": "5",
        "KEEL_JOBS_LISTEN_POLL_SECONDS": "0.5",
        "KEEL_WORKER_HTTP_PORT": "0",  # two workers at once: no probe port to share
    }
    return subprocess.Popen(
        [str(KEEL), "worker", "--queues", "fault=8"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def scalar(database: Database, sql: str) -> int:
    async with database.read() as session:
        return int((await session.execute(text(sql))).scalar_one())


async def test_sigkilled_workers_lose_nothing_and_never_overlap(
    pg_url: str, tmp_path: Path
) -> None:
    database = Database(pg_url)
    workers: list[subprocess.Popen[bytes]] = []
    killed_at: dict[int, datetime] = {}
    try:
        async with database.write() as session:
            for statement in SETUP.strip().split(";"):
                if statement.strip():
                    await session.execute(text(statement))
            await queue.Enqueuer(session).enqueue_many(
                [queue.NewJob(RECORD_RUN, {"i": i}) for i in range(JOBS)],
            )
        workers = [start_worker(pg_url, tmp_path), start_worker(pg_url, tmp_path)]
        deadline = time.monotonic() + 150
        for kill in range(KILLS):
            # Kill only while work is under way: wait for another slice of runs to start.
            target = (kill + 1) * JOBS // (KILLS + 2)
            while await scalar(database, "SELECT count(*) FROM job_runs") < target:
                assert time.monotonic() < deadline, "workers made no progress"
                await asyncio.sleep(0.1)
            victim = workers[kill % 2]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            killed_at[victim.pid] = datetime.now(UTC)
            workers[kill % 2] = start_worker(pg_url, tmp_path)
        while (
            await scalar(
                database,
                "SELECT count(*) FROM jobs WHERE job_type = 'fault.record_run' "
                f"AND state = '{JobState.SUCCEEDED}'",
            )
            < JOBS
        ):
            assert time.monotonic() < deadline, "jobs did not all succeed in time"
            await asyncio.sleep(0.2)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=30) == 0

        async with database.read() as session:
            grouped = await session.execute(
                text(
                    "SELECT state, count(*) FROM jobs WHERE job_type = 'fault.record_run' "
                    "GROUP BY state"
                )
            )
            states = {row[0]: row[1] for row in grouped}
            runs = (
                await session.execute(
                    text(
                        "SELECT job_id, attempt, pid, started_at, finished_at FROM job_runs "
                        "ORDER BY job_id, started_at"
                    )
                )
            ).all()
            conflicts = (await session.execute(text("SELECT * FROM job_run_conflicts"))).all()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        await database.dispose()

    assert states == {"succeeded": JOBS}
    assert conflicts == []
    assert len(killed_at) == KILLS
    by_job: dict[str, list[tuple[int, int, datetime, datetime | None]]] = {}
    for job_id, attempt, pid, started, finished in runs:
        by_job.setdefault(job_id, []).append((attempt, pid, started, finished))
    assert len(by_job) == JOBS  # every job ran
    interrupted = 0
    for job_id, job_runs in by_job.items():
        assert job_runs[-1][3] is not None, f"{job_id}: its last run never finished"
        for (_a, pid, _s, finished), (_b, _p, next_start, _f) in itertools.pairwise(job_runs):
            ended = finished if finished is not None else killed_at.get(pid)
            assert ended is not None, f"{job_id}: an unfinished run of a live process"
            assert ended <= next_start, f"{job_id}: two runs overlapped"
            interrupted += finished is None
    assert interrupted > 0  # the kills did land mid-job

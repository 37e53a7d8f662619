"""A real ``keel worker`` serves ``/live``, ``/ready`` and ``/metrics`` on a port of its own.

The body is the API's ``application/health+json``; readiness covers the worker's
database, schema, job store and lease loop, and fails while SIGTERM drains the
worker, whose running job still finishes; ``/metrics`` carries queue depth and
oldest-ready age read from the database, for queues no process of it serves too.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from keel.db.engine import Database
from keel.jobs import enqueue, queue
from keel.jobs.states import JobState
from tests.support.databases import Templates, fresh_database
from tests.support.jobs_fault import RECORD_RUN
from tests.support.processes import KEEL, free_port
from tests.support.worker_processes import (
    REPO,
    keel_worker,
    prepare_fault_tables,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

HEALTH = "application/health+json"


@pytest.fixture
def pg_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


async def _setup(url: str) -> str:
    """Fault tables; a job waiting for 30 s in a queue nobody serves; one long fault job."""
    database = Database(url)
    try:
        await prepare_fault_tables(database)
        async with database.write() as session:
            await queue.enqueue(
                session,
                "jobs.purge_finished",
                {},
                queue="unserved",
                run_at=datetime.now(UTC) - timedelta(seconds=30),
            )
        return await enqueue(database, RECORD_RUN, {"work_seconds": 3})
    finally:
        await database.dispose()


async def _scalar(url: str, sql: str) -> object:
    database = Database(url)
    try:
        async with database.read() as session:
            return (await session.execute(text(sql))).scalar_one_or_none()
    finally:
        await database.dispose()


def test_worker_probes_metrics_and_drain(pg_url: str, tmp_path: Path) -> None:
    env = worker_env(pg_url, tmp_path, {"KEEL_HEALTH_CACHE_SECONDS": "0"})
    with keel_worker(env, tmp_path, ["--queues", "fault=2"]) as worker:
        live = worker.get("/live")
        assert live.status_code == 200
        assert live.headers["content-type"] == HEALTH
        assert list(live.json()["checks"]) == ["eventloop:lag"]

        ready = worker.get("/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "pass"
        assert body["description"] == "Keel worker readyz"
        assert set(body["checks"]) == {
            "database:responseTime",
            "schema:revision",
            "jobs:queues",
            "leases:heartbeatAge",
        }
        assert body["checks"]["jobs:queues"][0]["observedValue"] == "fault=2"
        verbose = worker.get("/ready?verbose")
        assert verbose.text.endswith("readyz check passed\n")

        missing = worker.get("/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["status"] == 404

        job_id = asyncio.run(_setup(pg_url))
        samples = worker.samples()
        depth = samples[("keel_jobs_queue_depth", (("queue", "unserved"), ("state", "ready")))]
        assert depth == 1.0
        age = samples[("keel_jobs_oldest_ready_age_seconds", (("queue", "unserved"),))]
        assert age >= 29.0
        runs = (("job_type", RECORD_RUN.name), ("outcome", "succeeded"))
        assert ("keel_job_duration_seconds_count", runs) in samples  # from the first scrape

        # SIGTERM while the 3 s job runs: /ready fails at once, /live holds, the job finishes.
        wait_for(
            lambda: asyncio.run(_scalar(pg_url, "SELECT count(*) FROM job_runs")) == 1,
            30,
            "the fault job to start",
            worker,
        )
        worker.terminate()
        wait_for(lambda: worker.get("/ready").status_code == 503, 10, "/ready to fail", worker)
        draining = worker.get("/ready").json()
        assert draining["checks"]["lifecycle:draining"][0]["status"] == "fail"
        assert worker.get("/live").status_code == 200
        assert worker.process.wait(timeout=30) == 0
    state = asyncio.run(_scalar(pg_url, f"SELECT state FROM jobs WHERE id = '{job_id}'"))
    assert state == JobState.SUCCEEDED.value


def test_a_port_in_use_is_a_clear_start_up_error(tmp_path: Path) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        env = worker_env(f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}", tmp_path)
        result = subprocess.run(
            [*KEEL, "worker", "--http-port", str(port)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr + result.stdout
    assert "--http-port" in result.stderr + result.stdout

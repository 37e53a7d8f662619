"""Real ``keel worker`` processes with their HTTP port, for end-to-end and fault tests.

Each worker gets a free port on 127.0.0.1, its own session and log file (JSON
lines), and loads the fault job type (``tests.support.jobs_fault``), whose runs
record which process ran them. Stopped by pid, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from keel.db.engine import Database
from tests.support.jobs_fault import SETUP
from tests.support.processes import KEEL, KeelServer, free_port, keel_env

REPO = Path(__file__).resolve().parents[2]


def worker_env(
    database_url: str, workdir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    return keel_env(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
            "KEEL_DATABASE_URL": database_url,
            "KEEL_STORAGE_DIR": str(workdir / "blobs"),
            "KEEL_JOBS_MODULES": "tests.support.jobs_fault",
            "KEEL_LOG_FORMAT": "json",
            "KEEL_JOBS_LEASE_SECONDS": "6",
            "KEEL_JOBS_GRACE_SECONDS": "10",
            "KEEL_JOBS_LISTEN_POLL_SECONDS": "0.5",
            **(extra or {}),
        }
    )


class WorkerProcess(KeelServer):
    """A ``keel worker`` this test started: its port, its log, and its samples."""

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines whose ``event`` is ``name`` (from any of its processes)."""
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and item.get("event") == name:
                    found.append(item)
        return found

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10.0)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``: (name, sorted labels) → value."""
        scraped = self.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(scraped.text)
            for sample in family.samples
        }

    def stop(self) -> None:
        """SIGTERM and wait; past 40 s SIGKILL its whole session (a supervisor's children too)."""
        self.terminate()
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: it and its children
            self.process.wait(timeout=10)


def start_worker(env: Mapping[str, str], cwd: Path, args: list[str]) -> WorkerProcess:
    port = free_port()
    log_path = cwd / f"keel-worker-{port}.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [*KEEL, "worker", "--http-port", str(port), *args],
            env=dict(env),
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return WorkerProcess(process, port, log_path)


@contextmanager
def keel_worker(env: Mapping[str, str], cwd: Path, args: list[str]) -> Iterator[WorkerProcess]:
    worker = start_worker(env, cwd, args)
    try:
        wait_for(lambda: _ready(worker), 60, "the worker's /ready", worker)
        yield worker
    finally:
        worker.stop()


def _ready(worker: WorkerProcess) -> bool:
    if worker.process.poll() is not None:
        raise AssertionError(f"keel worker exited early:\n{worker.log()[-3000:]}")
    with contextlib.suppress(httpx.HTTPError):
        return worker.get("/ready").status_code == 200
    return False


def wait_for(
    condition: Callable[[], bool], seconds: float, what: str, worker: WorkerProcess | None = None
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tail = worker.log()[-3000:] if worker is not None else ""
    raise AssertionError(f"{what}: not within {seconds} s\n{tail}")


async def prepare_fault_tables(database: Database) -> None:
    async with database.write() as session:
        for statement in SETUP.strip().split(";"):
            if statement.strip():
                await session.execute(text(statement))

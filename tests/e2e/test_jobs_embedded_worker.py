"""``keel serve`` on SQLite runs its own job worker: an export completes with no ``keel worker``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import keel_env

pytestmark = pytest.mark.e2e

KEEL = Path(sys.executable).parent / "keel"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keel(env: dict[str, str], *args: str) -> dict[str, str]:
    done = subprocess.run(
        [str(KEEL), *args, "--json"], env=env, capture_output=True, check=True, timeout=60
    )
    parsed: dict[str, str] = json.loads(done.stdout)
    return parsed


def test_keel_serve_on_sqlite_runs_exports_in_process(tmp_path: Path) -> None:
    env = keel_env(
        {
            "KEEL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}",
            "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
            "KEEL_JOBS_GRACE_SECONDS": "5",
        }
    )
    port = free_port()
    server = subprocess.Popen(
        [str(KEEL), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):  # the server migrates the new database first
            try:
                httpx.get(f"{base}/docs", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        org = keel(env, "admin", "create-org", "E2E")["id"]
        user = keel(env, "admin", "create-user", "--org", org, "--email", "e2e@e.test")["id"]
        token = keel(env, "admin", "create-token", "--user", user)["token"]
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(f"{base}/v1/exports", json={"format": "csv"}, headers=headers)
        assert created.status_code == 202
        export_id = created.json()["id"]
        status = ""
        for _ in range(300):
            status = httpx.get(f"{base}/v1/exports/{export_id}", headers=headers).json()["status"]
            if status in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert status == "succeeded"
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully (lifespan included), then re-raises the signal.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        jobs = keel(env, "jobs", "list", "--state", "succeeded")
        assert any(item["job_type"] == "exports.run" for item in jobs["items"])  # type: ignore[index]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)

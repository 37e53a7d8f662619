"""A real ``keel serve`` process on a free port, for the observability end-to-end tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.app import SECRET
from tests.support.policies import generous_policy
from tests.support.processes import keel_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)


def _wait_ready(server: ServerProcess, deadline_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"keel serve exited early:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"keel serve never became ready:\n{server.log()}")


@contextmanager
def keel_serve(
    database_url: str, workdir: Path, *, workers: int = 1, **env_overrides: str
) -> Iterator[ServerProcess]:
    port = free_port()
    env = keel_env(
        {
            "KEEL_DATABASE_URL": database_url,
            "KEEL_SECRET_KEY": SECRET,
            "KEEL_STORAGE_DIR": str(workdir / "blobs"),
            "KEEL_LOG_FORMAT": "json",
            "KEEL_AUTH_CACHE_SECONDS": "5",
            # load here is the test's own: only what is under test may refuse it
            "KEEL_RATELIMIT_POLICY": str(generous_policy(workdir)),
            **env_overrides,
        }
    )
    if "PROMETHEUS_MULTIPROC_DIR" not in env_overrides:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = workdir / f"keel-serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "keel.cli",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

"""Real ``keel`` processes for end-to-end and fault tests: started, waited for, stopped by pid.

The one place tests start ``keel serve``: each server gets a free port on
127.0.0.1, its own session and log file, so a test can SIGTERM or SIGKILL
exactly the process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.app import SECRET

KEEL = [sys.executable, "-m", "keel.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keel_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    # A loaded test machine lags; only tests about shedding should ever be shed.
    env["KEEL_SHED_MAX_LOOP_LAG_SECONDS"] = "60"
    # Keys are required by default; tests about idempotency send them or ask for it.
    env["KEEL_IDEMPOTENCY_REQUIRED_ROUTES"] = ""
    # SIGTERM keeps a server serving for the drain (5 s by default, for a load balancer
    # to notice), then lets its accept queue settle: every test stops its servers, and
    # only tests about stopping need either. Those set their own.
    env["KEEL_SHUTDOWN_DRAIN_SECONDS"] = "0"
    env["KEEL_SERVE_LISTENER_SETTLE_SECONDS"] = "0.05"
    env.update(extra)
    return env


def run_keel(args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 60) -> str:
    result = subprocess.run(
        [*KEEL, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


@dataclass
class KeelServer:
    """A ``keel serve`` process this test started: its URL, its log, and ways to stop it."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM without waiting: the graceful drain, watched by the test."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no graceful drain."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def server_env(
    database_url: str, workdir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``keel_env`` for a server on ``database_url`` with the tests' secret and its own blobs."""
    return keel_env(
        {
            "KEEL_DATABASE_URL": database_url,
            "KEEL_SECRET_KEY": SECRET,
            "KEEL_STORAGE_DIR": str(workdir / "blobs"),
            **(extra or {}),
        }
    )


def start_server(
    env: Mapping[str, str],
    cwd: Path,
    *,
    port: int | None = None,
    workers: int = 1,
    name: str | None = None,
    ready_path: str = "/openapi.json",
    timeout: float = 60.0,
) -> KeelServer:
    """Start ``keel serve`` on 127.0.0.1 in its own session; return once ``ready_path`` is 200."""
    port = port or free_port()
    log_path = cwd / f"{name or 'keel-serve'}-{port}.log"
    command = [*KEEL, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=dict(env),
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = KeelServer(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"keel serve exited early:\n{server.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + ready_path, timeout=2.0).status_code == 200:
                return server
        time.sleep(0.05)
    server.kill()
    raise AssertionError(f"keel serve did not start in {timeout} s:\n{server.log()[-3000:]}")


@contextmanager
def keel_server(
    env: Mapping[str, str],
    cwd: Path,
    *,
    port: int | None = None,
    workers: int = 1,
    ready_path: str = "/openapi.json",
) -> Iterator[KeelServer]:
    server = start_server(env, cwd, port=port, workers=workers, ready_path=ready_path)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def servers(env: Mapping[str, str], cwd: Path, count: int) -> Iterator[list[KeelServer]]:
    started: list[KeelServer] = []
    try:
        for index in range(count):
            started.append(start_server(env, cwd, name=f"keel-{index}"))
        yield started
    finally:
        for server in started:
            server.stop()

"""Real ``keel serve`` processes for end-to-end and fault tests.

Each server gets a free port on 127.0.0.1, its own environment (database,
secret, storage directory, extra settings) and its own session, so a test can
SIGKILL exactly the process it started, by pid.
"""

from __future__ import annotations

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
from tests.support.processes import keel_env

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no graceful drain."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    database_url: str, workdir: Path, name: str, settings: Mapping[str, str] | None = None
) -> Server:
    port = free_port()
    env = keel_env(
        {
            "KEEL_DATABASE_URL": database_url,
            "KEEL_SECRET_KEY": SECRET,
            "KEEL_STORAGE_DIR": str(workdir / "blobs"),
            **(settings or {}),
        }
    )
    log = workdir / f"{name}.log"
    keel = Path(sys.executable).parent / "keel"
    command = [str(keel), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keel serve exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{server.url}/openapi.json", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(
        f"keel serve did not start in {START_TIMEOUT}s: {log.read_text(errors='replace')[-2000:]}"
    )


@contextmanager
def servers(
    database_url: str, workdir: Path, count: int, settings: Mapping[str, str] | None = None
) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for index in range(count):
            started.append(start_server(database_url, workdir, f"keel-{index}", settings))
        yield started
    finally:
        for server in started:
            server.stop()

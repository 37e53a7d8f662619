"""Real ``keel`` processes for end-to-end and fault tests: started, waited for, stopped by pid."""

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
from pathlib import Path

import httpx

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


def wait_until_up(base_url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"keel exited early with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{base_url}/openapi.json", timeout=1.0)
            return
        time.sleep(0.1)
    raise AssertionError(f"keel did not answer on {base_url} within {timeout} s")


@contextmanager
def keel_server(
    env: Mapping[str, str], cwd: Path, *, port: int | None = None, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = port or free_port()
    log = (cwd / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        [*KEEL, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=dict(env),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, process)
        yield base_url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()

"""A real Prometheus (the Debian package's ``prometheus``) on 127.0.0.1 for the tests:
a temporary configuration scraping the given targets every second, its own data directory,
stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import free_port

SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return found


@contextmanager
def prometheus_server(workdir: Path, targets: Sequence[str]) -> Iterator[str]:
    """Prometheus scraping ``targets`` (``host:port``); yields its base URL."""
    port = free_port()
    config = workdir / "prometheus.yml"
    quoted = ", ".join(f'"{target}"' for target in targets)
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: 1m\n"
        f"scrape_configs:\n  - job_name: versions\n    static_configs:\n"
        f"      - targets: [{quoted}]\n",
        encoding="utf-8",
    )
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(url, "count(up == 1)", len(targets), timeout=30.0)
        yield url
    finally:
        # SIGKILL: its data directory is thrown away, so a clean shutdown only costs time.
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.close()


def query(url: str, expression: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expression}, timeout=5.0)
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_until(url: str, expression: str, value: float, *, timeout: float) -> None:
    """Until ``expression`` is ``value`` (bounded in time)."""
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        try:
            result = query(url, expression)
        except (httpx.HTTPError, ValueError) as error:  # not up, or not ready (plain-text 503)
            seen = error
        else:
            seen = result
            if result and float(result[0]["value"][1]) == value:
                return
        time.sleep(0.2)
    raise AssertionError(f"{expression} never became {value} in {timeout} s: {seen}")

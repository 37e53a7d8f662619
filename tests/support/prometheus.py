"""A real Prometheus (the Debian package's ``prometheus``) on 127.0.0.1 for the tests:
a temporary configuration scraping the given targets and evaluating the given rule files
every second, its own data directory, stopped by pid. Missing, it skips the test, or fails
it under ``KEEL_REQUIRE_SERVICES=1`` (CI)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import free_port
from tests.support.services import need_program

SCRAPE_INTERVAL = "1s"


@contextmanager
def prometheus_server(
    workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = ()
) -> Iterator[str]:
    """Prometheus scraping ``targets`` (``host:port``); yields its base URL once all are up."""
    binary = need_program("prometheus", "prometheus")
    port = free_port()
    config = workdir / "prometheus.yml"
    settings = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "keel", "static_configs": [{"targets": list(targets)}]}],
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
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


def wait_for(url: str, expression: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Until ``expression`` has a result (bounded in time); that result."""
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        try:
            result = query(url, expression)
        except (httpx.HTTPError, ValueError) as error:
            seen = error
        else:
            if result:
                return result
        time.sleep(0.2)
    raise AssertionError(f"no result for {expression} in {timeout} s: {seen}")

"""``keel serve --workers 2``'s supervisor: its health ping is a setting, and each restart shows.

A worker stopped with SIGSTOP is alive but answers no health ping: with
``KEEL_SERVE_WORKER_HEALTHCHECK_SECONDS=2`` the supervisor replaces it within
seconds (with uvicorn's constant it would have been 5 s, with Keel's default
30 s — past this test's bound). A worker SIGKILLed exits on its own. Each
replacement is a log line and a count on ``/metrics``, whichever worker answers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import KeelServer, keel_server, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

WAIT = 25.0  # bound on each wait below


def _workers(server: KeelServer) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    parent = server.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    found = set()
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            found.add(int(child))
    return found


def _restarts(server: KeelServer) -> list[dict[str, object]]:
    lines = []
    for line in server.log().splitlines():
        if '"serve_worker_restarted"' in line:
            lines.append(json.loads(line))
    return lines


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {WAIT} s: {what}")


def _ready(server: KeelServer) -> bool:
    try:  # while both replacements start, connections wait in the backlog
        return httpx.get(server.url + "/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _metric(server: KeelServer, reason: str) -> float:
    text = ""
    for _ in range(3):  # a fresh connection: the scrape may land on any worker
        text = httpx.get(server.url + "/metrics", timeout=10.0).text
    for line in text.splitlines():
        if line.startswith(f'keel_serve_worker_restarts_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"keel_serve_worker_restarts_total{{reason={reason!r}}} missing")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_supervisor_replaces_an_unresponsive_and_a_dead_worker_and_counts_both(
    database_url: str, tmp_path: Path
) -> None:
    env = server_env(
        database_url,
        tmp_path,
        {
            "KEEL_LOG_FORMAT": "json",
            "KEEL_SERVE_WORKER_HEALTHCHECK_SECONDS": "2",
            "KEEL_SHUTDOWN_DRAIN_SECONDS": "0",
        },
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with keel_server(env, tmp_path, workers=2, ready_path="/ready") as server:
        _wait_for(lambda: len(_workers(server)) == 2, "two workers")
        assert _metric(server, "unresponsive") == 0
        assert _metric(server, "exited") == 0
        first, second = sorted(_workers(server))

        os.kill(first, signal.SIGSTOP)  # alive, but answers nothing
        _wait_for(lambda: first not in _workers(server), "the stopped worker replaced")
        os.kill(second, signal.SIGKILL)
        _wait_for(lambda: len(_restarts(server)) == 2, "two restarts logged")
        _wait_for(lambda: len(_workers(server)) == 2, "two workers again")
        _wait_for(lambda: _ready(server), "ready again")

        assert _metric(server, "unresponsive") == 1
        assert _metric(server, "exited") == 1
        restarts = {str(line["reason"]): line for line in _restarts(server)}
        assert restarts["unresponsive"]["pid"] == first
        assert restarts["unresponsive"]["healthcheck_seconds"] == 2
        assert restarts["exited"]["pid"] == second
        assert restarts["exited"]["exit_code"] == -signal.SIGKILL
        server.terminate()
        assert server.wait(60.0) == 0


def _fresh_connections_answered(server: KeelServer, count: int) -> int:
    """How many of ``count`` requests, each on a new connection, got an answer.

    The connect timeout is short on purpose: a SYN the listener's filter dropped is
    retransmitted after 1 s, 3 s, ... and never accepted while the filter stays.
    """
    answered = 0
    for _ in range(count):
        try:
            with httpx.Client(timeout=httpx.Timeout(5.0, connect=2.5)) as client:
                if client.get(server.url + "/live").status_code == 200:
                    answered += 1
        except httpx.HTTPError:
            pass
    return answered


@pytest.mark.parametrize("backend", ["sqlite"])
def test_workers_replaced_by_sighup_or_retired_by_sigttou_leave_the_listener_open(
    database_url: str, tmp_path: Path
) -> None:
    """A worker retired while its siblings go on serving must not quiesce the shared
    listener: the filter it would attach lives on the socket, not on its descriptor,
    and would drop every new connection of the workers that stay."""
    env = server_env(
        database_url,
        tmp_path,
        {"KEEL_LOG_FORMAT": "json", "KEEL_SHUTDOWN_DRAIN_SECONDS": "0"},
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with keel_server(env, tmp_path, workers=2, ready_path="/ready") as server:
        _wait_for(lambda: len(_workers(server)) == 2, "two workers")
        before = _workers(server)

        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for(
            lambda: not (_workers(server) & before) and len(_workers(server)) == 2,
            "both workers replaced",
        )
        assert _fresh_connections_answered(server, 10) == 10

        os.kill(server.process.pid, signal.SIGTTOU)
        _wait_for(lambda: len(_workers(server)) == 1, "one worker retired")
        assert _fresh_connections_answered(server, 10) == 10
        assert '"listener_left_to_siblings"' in server.log()
        server.terminate()
        assert server.wait(60.0) == 0

"""Only the processes we started are signalled: a recorded pid must still run the command we
started and have started when the record says — the kernel reuses pids."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from keel.deploy.fronts import Front, FrontState, stop_front, this_host
from keel.deploy.processes import ServeProcess, is_ours, started_at, stop_process

PORT = 43_210


@pytest.fixture
def lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line reads like ``keel serve --port PORT`` (it only sleeps)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "serve", "--port", str(PORT)]
    )
    yield process
    process.kill()
    process.wait(timeout=10)


def test_a_pid_with_another_start_time_is_not_ours_and_is_never_signalled(
    lookalike: subprocess.Popen[bytes],
) -> None:
    started = started_at(lookalike.pid)
    assert started is not None
    recorded = ServeProcess(pid=lookalike.pid, port=PORT, started_at=started)
    assert is_ours(recorded)
    assert is_ours(replace(recorded, started_at=None))  # a record from before start times
    reused = replace(recorded, started_at=started - 60)  # the pid of a process long gone
    assert not is_ours(reused)
    assert stop_process(reused, wait_seconds=0.1) is False
    assert lookalike.poll() is None  # still running: never signalled
    assert stop_process(recorded, wait_seconds=5) is False  # SIGTERM was enough
    assert lookalike.wait(timeout=5) != 0


def _front(pid: int, started: float, config: Path) -> Front:
    return Front(
        environment="prod",
        host_name=this_host(),
        workdir=config.parent,
        admin_socket=config.parent / "admin.sock",
        config_path=config,
        bind_host="127.0.0.1",
        bind_port=PORT,
        pid=pid,
        started_at=started,
    )


def test_a_front_whose_pid_is_not_its_haproxy_is_gone_and_left_alone(
    lookalike: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    started = started_at(lookalike.pid)
    assert started is not None
    front = _front(lookalike.pid, started, tmp_path / "haproxy.cfg")
    assert front.state() is FrontState.GONE  # running, but not haproxy -f CONFIG
    assert stop_front(front, wait_seconds=0.1) is False
    assert lookalike.poll() is None
    assert replace(front, host_name="elsewhere").state() is FrontState.ELSEWHERE
    assert started_at(2**22 + 1) is None
    assert _front(2**22 + 1, started, front.config_path).state() is FrontState.GONE

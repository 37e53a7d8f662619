"""Only the processes we started are signalled: a recorded pid must still run the command we
started and carry the start mark the record says (boot id and start tick) — the kernel reuses
pids."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keel.deploy.fronts import Front, FrontState, stop_front, this_host
from keel.deploy.processes import ServeProcess, is_ours, start_mark, stop_process

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


def test_a_pid_with_another_start_mark_is_not_ours_and_is_never_signalled(
    lookalike: subprocess.Popen[bytes],
) -> None:
    mark = start_mark(lookalike.pid)
    assert mark is not None
    boot, tick = mark.split("/")
    recorded = ServeProcess(pid=lookalike.pid, port=PORT, start_mark=mark)
    assert is_ours(recorded)
    assert is_ours(replace(recorded, start_mark=None))  # a record from before start marks
    reused = replace(recorded, start_mark=f"{boot}/{int(tick) - 1}")  # a process long gone
    assert not is_ours(reused)
    assert not is_ours(replace(recorded, start_mark=f"another-boot/{tick}"))
    assert not is_ours(reused)
    assert stop_process(reused, wait_seconds=0.1) is False
    assert lookalike.poll() is None  # still running: never signalled
    assert stop_process(recorded, wait_seconds=5) is False  # SIGTERM was enough
    assert lookalike.wait(timeout=5) != 0


def _front(pid: int, mark: str, config: Path) -> Front:
    return Front(
        environment="prod",
        host_name=this_host(),
        workdir=config.parent,
        admin_socket=config.parent / "admin.sock",
        config_path=config,
        bind_host="127.0.0.1",
        bind_port=PORT,
        pid=pid,
        start_mark=mark,
        started_at=datetime(2026, 12, 3, tzinfo=UTC),
    )


def test_a_front_whose_pid_is_not_its_haproxy_is_gone_and_left_alone(
    lookalike: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    mark = start_mark(lookalike.pid)
    assert mark is not None
    front = _front(lookalike.pid, mark, tmp_path / "haproxy.cfg")
    assert front.state() is FrontState.GONE  # running, but not haproxy -f CONFIG
    assert stop_front(front, wait_seconds=0.1) is False
    assert lookalike.poll() is None
    assert replace(front, host_name="elsewhere").state() is FrontState.ELSEWHERE
    assert start_mark(2**22 + 1) is None
    assert _front(2**22 + 1, mark, front.config_path).state() is FrontState.GONE

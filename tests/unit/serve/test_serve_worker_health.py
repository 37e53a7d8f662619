"""The supervisor's health ping, on made-up times: never waits, and judges a worker fairly.

A worker still starting (importing the app) has ``start_seconds`` to answer its
first ping; a serving worker has ``healthcheck_seconds`` for each later one.
The child's side of the pipe is played by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from keel.serve.supervisor import Health, KeelWorker

HEALTHCHECK = 30.0
START = 60.0


@dataclass
class FakeProcess:
    alive: bool = True

    def is_alive(self) -> bool:
        return self.alive


@pytest.fixture
def worker() -> Iterator[KeelWorker]:
    made = KeelWorker(uvicorn.Config("keel.app:create_app_from_environment"), [], 0.5)
    made.process = FakeProcess()  # type: ignore[assignment]  # never started: no child
    made.started_at = 100.0
    yield made
    made.parent_conn.close()
    made.child_conn.close()


def check(worker: KeelWorker, now: float) -> Health:
    return worker.check(now, healthcheck_seconds=HEALTHCHECK, start_seconds=START)


def answer(worker: KeelWorker) -> None:
    """The child's ping thread: read one ping, answer it."""
    assert worker.child_conn.recv() == b"ping"
    worker.child_conn.send(True)


def test_a_starting_worker_has_start_seconds_for_its_first_answer(worker: KeelWorker) -> None:
    assert check(worker, 100.5) is Health.STARTING
    assert check(worker, 100.0 + START - 1) is Health.STARTING  # slow import: not killed
    assert check(worker, 100.0 + START + 1) is Health.UNRESPONSIVE


def test_a_serving_worker_has_healthcheck_seconds_for_each_ping(worker: KeelWorker) -> None:
    check(worker, 101.0)  # the first ping
    answer(worker)
    assert check(worker, 105.0) is Health.SERVING  # answered; the next ping goes out at 105
    assert check(worker, 105.0 + HEALTHCHECK - 1) is Health.SERVING
    assert check(worker, 105.0 + HEALTHCHECK + 1) is Health.UNRESPONSIVE


def test_one_ping_is_outstanding_at_a_time_and_late_answers_all_count(worker: KeelWorker) -> None:
    for now in (101.0, 101.5, 102.0, 102.5):
        check(worker, now)
    answer(worker)  # exactly one ping was sent for all those ticks
    assert not worker.child_conn.poll(0)
    assert check(worker, 103.0) is Health.SERVING
    answer(worker)
    assert check(worker, 200.0) is Health.SERVING  # answered: a fresh ping, a fresh timeout


def test_a_dead_worker_has_exited_whatever_its_pings(worker: KeelWorker) -> None:
    check(worker, 101.0)
    answer(worker)
    worker.process.alive = False  # type: ignore[attr-defined]
    assert check(worker, 102.0) is Health.EXITED

"""SIGTERM's drain on made-up times: a repeat within the window is the same stop, later is "now".

And the handler itself, in signal context, does nothing but wake the loop.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import pytest
import structlog

from keel.observe.lifecycle import Lifecycle
from keel.observe.shutdown import REPEAT_WINDOW_SECONDS, DrainOnSignal
from keel.testing import ManualClock, capture_logs


class ServerHandler:
    """uvicorn's handler, as DrainOnSignal finds it: records each hand-over."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.calls.append(signum)


@pytest.fixture
def server_handler() -> Iterator[ServerHandler]:
    handler = ServerHandler()
    previous = signal.signal(signal.SIGTERM, handler)
    yield handler
    signal.signal(signal.SIGTERM, previous)


@contextmanager
def installed(drain_seconds: float) -> Iterator[tuple[Lifecycle, DrainOnSignal]]:
    """A drain in front of the server's handler, taken out again on leaving."""
    lifecycle = Lifecycle(ManualClock())
    drain = DrainOnSignal(lifecycle, drain_seconds=drain_seconds)
    assert drain.install()
    try:
        yield lifecycle, drain
    finally:
        drain.uninstall()


async def test_a_repeat_within_the_window_keeps_draining_a_later_one_stops_now(
    server_handler: ServerHandler,
) -> None:
    with installed(drain_seconds=30.0) as (lifecycle, drain):
        drain.receive(signal.SIGTERM, None, now=100.0)
        assert lifecycle.draining
        assert server_handler.calls == []  # draining, not stopping

        drain.receive(signal.SIGTERM, None, now=100.0 + REPEAT_WINDOW_SECONDS - 0.1)
        assert server_handler.calls == []  # the group's and the supervisor's: one stop

        drain.receive(signal.SIGTERM, None, now=100.0 + REPEAT_WINDOW_SECONDS + 0.1)
        assert server_handler.calls == [signal.SIGTERM]  # an operator's second: now


async def test_without_a_drain_the_first_sigterm_stops_at_once(
    server_handler: ServerHandler,
) -> None:
    with installed(drain_seconds=0.0) as (_lifecycle, drain):
        drain.receive(signal.SIGTERM, None, now=5.0)
        assert server_handler.calls == [signal.SIGTERM]


async def test_the_signal_handler_logs_nothing_and_the_loop_drains_in_a_context_of_its_own(
    server_handler: ServerHandler,
) -> None:
    # A handler runs between two bytecodes of the request it interrupted — maybe inside
    # the log writer's lock: one that logged there hung a worker under load (seen in CI).
    with installed(drain_seconds=30.0) as (lifecycle, _drain), capture_logs() as logs:
        try:
            structlog.contextvars.bind_contextvars(request_id="the-interrupted-request")
            signal.raise_signal(signal.SIGTERM)  # its handler has run when this returns
            assert logs == []
            assert not lifecycle.draining

            await asyncio.sleep(0)  # the loop's next turn
            assert lifecycle.draining
            assert [line["event"] for line in logs] == ["shutdown_draining"]
            assert "request_id" not in logs[0]
            assert server_handler.calls == []
        finally:
            structlog.contextvars.clear_contextvars()

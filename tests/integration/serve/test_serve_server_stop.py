"""``KeelServer`` stopped while its app is still starting: the app's drain still runs.

A real uvicorn server in this process on 127.0.0.1, a bare ASGI app whose
lifespan receives SIGTERM before it installs its drain — as a ``--workers``
worker slow to start does when the group is stopped.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
import uvicorn

from keel.observe.lifecycle import Lifecycle
from keel.observe.shutdown import DrainOnSignal
from keel.serve.server import KeelServer
from keel.testing import ManualClock

DRAIN_SECONDS = 0.3


class StoppedWhileStarting:
    """An app told to stop in the middle of its startup, before its drain takes SIGTERM."""

    def __init__(self) -> None:
        self.lifecycle = Lifecycle(ManualClock())
        self.drain = DrainOnSignal(self.lifecycle, DRAIN_SECONDS)
        self.started_at = 0.0
        self.stopping_at = 0.0
        self.draining_when_stopped = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"  # no request is sent here
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                signal.raise_signal(signal.SIGTERM)  # uvicorn's handler: the drain is not in
                self.drain.install()
                self.started_at = time.monotonic()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stopping_at = time.monotonic()
                self.draining_when_stopped = self.lifecycle.draining
                self.drain.uninstall()
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture
def sigterm_survived() -> Iterator[None]:
    """uvicorn re-raises the SIGTERM it caught when it is done: not into pytest's default."""

    def ignore(_signum: int, _frame: FrameType | None) -> None:
        """This process is the test run: it goes on."""

    previous = signal.signal(signal.SIGTERM, ignore)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("sigterm_survived")
async def test_a_sigterm_during_startup_is_drained_before_the_listener_is_quiesced() -> None:
    app = StoppedWhileStarting()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = KeelServer(config, settle_seconds=0.05)

    await asyncio.wait_for(server.serve(), timeout=10)

    assert app.draining_when_stopped  # /ready said 503 before it stopped
    assert app.stopping_at - app.started_at >= DRAIN_SECONDS  # and it served meanwhile

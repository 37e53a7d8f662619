"""An unhandled exception logged to a slow sink does not hold ``/live`` (in-process).

The issue's symptom: each unhandled exception held the event loop — and so
``/live`` — for 0.5–1.5 s while its line was written. Here the log sink takes
0.5 s per write; requests that end in an unhandled exception run while a probe
loop measures ``/live``: every probe answers in under 100 ms, and every
exception line is written in the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from tests.support.app import World

from keel.observe.logs import configure_logging, flush_logs
from keel.settings import Settings

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


class SlowSink:
    """A log stream whose every write takes half a second (a stalled pipe)."""

    def __init__(self) -> None:
        self.text: list[str] = []

    def write(self, text: str) -> int:
        time.sleep(0.5)
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        """Nothing buffered here."""


@pytest.fixture
def slow_sink(app: FastAPI, settings: Settings) -> Iterator[SlowSink]:
    sink = SlowSink()
    configure_logging(settings.model_copy(update={"log_format": "json"}), stream=sink)  # type: ignore[arg-type]
    yield sink
    configure_logging(settings)


async def test_live_answers_in_time_while_unhandled_exceptions_are_logged_to_a_slow_sink(
    app: FastAPI, client: httpx.AsyncClient, world: World, slow_sink: SlowSink
) -> None:
    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    probes: list[float] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as raw:

        async def probe() -> None:
            for _ in range(30):
                started = time.perf_counter()
                assert (await raw.get("/live")).status_code == 200
                probes.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)

        async def fail() -> None:
            for _ in range(5):
                assert (await raw.get("/v1/boom", headers=world.alice.headers)).status_code == 500
                await asyncio.sleep(0.05)

        # Once before measuring: FastAPI builds a route added late on its first match, and
        # the first traceback reads its source files; neither is what this test is about.
        assert (await raw.get("/v1/boom", headers=world.alice.headers)).status_code == 500
        await asyncio.gather(probe(), fail())
    assert max(probes) < 0.1, sorted(probes)[-5:]
    assert flush_logs(timeout=15)
    assert "".join(slow_sink.text).count('"unhandled_exception"') == 6

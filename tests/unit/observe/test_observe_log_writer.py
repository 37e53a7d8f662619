"""Log output never blocks its caller: a slow sink is written from the writer's thread."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from keel.observe.log_writer import LineWriter, dropped_lines_counter
from keel.observe.logs import configure_logging, flush_logs
from keel.settings import Settings

SINK_DELAY = 0.5


class SlowSink(io.StringIO):
    """A stream whose every write takes half a second (a stalled pipe or terminal)."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()

    def write(self, text: str) -> int:
        self.writers.add(threading.current_thread().name)
        time.sleep(SINK_DELAY)
        return super().write(text)


def _dropped_total(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("keel_log_lines_dropped_total") or 0.0


@pytest.fixture
def slow_sink() -> Iterator[SlowSink]:
    sink = SlowSink()
    configure_logging(Settings(log_format="json"), stream=sink)
    yield sink
    configure_logging(Settings())


async def test_logging_an_exception_to_a_slow_sink_does_not_hold_the_event_loop(
    slow_sink: SlowSink,
) -> None:
    ticks: list[float] = []

    async def heartbeat() -> None:  # what /live measures: the loop's responsiveness
        for _ in range(40):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    durations = []
    for attempt in range(3):
        try:
            raise RuntimeError(f"failure {attempt}")
        except RuntimeError:
            started = time.perf_counter()
            structlog.get_logger("t").exception("unhandled_exception", attempt=attempt)
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
            durations.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    await beating
    # Each call only renders and hands the line over; the sink's 0.5 s is spent elsewhere.
    assert max(durations) < 0.05, durations
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.1
    assert flush_logs(timeout=10)
    written = slow_sink.getvalue()
    assert written.count("unhandled_exception") == 3
    assert written.count("Exception in ASGI application") == 3
    assert slow_sink.writers == {"keel-log-writer"}


def test_lines_are_written_once_each_in_the_order_they_were_logged() -> None:
    sink = io.StringIO()
    writer = LineWriter(sink)
    threads = [
        threading.Thread(target=lambda n=n: [writer.write(f"{n}:{i}") for i in range(500)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush()
    lines = sink.getvalue().splitlines()
    assert len(lines) == 2000
    for n in range(4):
        assert [line for line in lines if line.startswith(f"{n}:")] == [
            f"{n}:{i}" for i in range(500)
        ]
    writer.close()


def test_a_full_buffer_drops_and_counts_instead_of_blocking() -> None:
    sink = SlowSink()
    notices: list[int] = []

    def notice(count: int) -> str:
        notices.append(count)
        return f"dropped {count}"

    counted = CollectorRegistry()
    writer = LineWriter(
        sink,
        max_pending_chars=1000,
        dropped_notice=notice,
        dropped_counter=dropped_lines_counter(counted),
    )
    started = time.perf_counter()
    for i in range(200):
        writer.write(f"line {i:04d} " + "x" * 90)
    assert time.perf_counter() - started < 0.2  # never waited for the 0.5 s sink
    assert writer.dropped > 0
    assert _dropped_total(counted) == writer.dropped
    assert writer.flush(timeout=10)
    written = sink.getvalue().splitlines()
    kept = [line for line in written if line.startswith("line ")]
    assert len(kept) + writer.dropped == 200
    # A line is dropped only while others wait, so the batch they go out in reports it.
    assert sum(notices) == writer.dropped
    assert [line for line in written if line.startswith("dropped ")] == [
        f"dropped {count}" for count in notices
    ]
    writer.close()


def test_close_writes_every_pending_line_and_later_lines_are_written_in_place() -> None:
    sink = SlowSink()
    writer = LineWriter(sink)
    for i in range(3):
        writer.write(f"pending {i}")
    writer.close(timeout=10)
    assert sink.getvalue().splitlines() == ["pending 0", "pending 1", "pending 2"]
    writer.write("after close")
    assert sink.getvalue().splitlines()[-1] == "after close"


def test_a_failing_stream_does_not_stop_the_writer() -> None:
    class Flaky(io.StringIO):
        broken = True

        def write(self, text: str) -> int:
            if self.broken:
                raise OSError("EPIPE")
            return super().write(text)

    sink = Flaky()
    writer = LineWriter(sink)
    writer.write("lost while broken")
    assert writer.flush(timeout=5)
    sink.broken = False
    writer.write("written once it works")
    assert writer.flush(timeout=5)
    assert sink.getvalue() == "written once it works\n"
    writer.close()


@pytest.mark.timeout(10)  # the old writer never returned: its handler waited for its own lock
def test_a_signal_handler_that_logs_inside_a_write_neither_hangs_nor_loses_its_line() -> None:
    class HeldSink(io.StringIO):
        """Holds the writer thread in its first write until released."""

        def __init__(self) -> None:
            super().__init__()
            self.entered = threading.Event()
            self.release = threading.Event()

        def write(self, text: str) -> int:
            self.entered.set()
            self.release.wait(5)
            return super().write(text)

    class SignalOnCount:
        """Counting a dropped line runs inside the hand-over: a signal arrives right there."""

        def inc(self) -> None:
            signal.raise_signal(signal.SIGUSR1)  # its handler has run when this returns

    sink = HeldSink()
    counter: Any = SignalOnCount()
    writer = LineWriter(sink, max_pending_chars=8, dropped_counter=counter)
    previous = signal.signal(signal.SIGUSR1, lambda _signum, _frame: writer.write("from handler"))
    try:
        writer.write("first")  # the writer thread takes it and is held in the sink
        assert sink.entered.wait(5)
        writer.write("second")  # waits in the buffer, which is now full
        writer.write("dropped")  # dropped and counted: the handler logs mid-hand-over
    finally:
        signal.signal(signal.SIGUSR1, previous)
        sink.release.set()
    writer.close(timeout=5)
    assert sink.getvalue().splitlines() == ["first", "second", "from handler"]
    assert writer.dropped == 1

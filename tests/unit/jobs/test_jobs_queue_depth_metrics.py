"""Queue depth for ``/metrics``: read from the database at scrape time, cached, bounded.

The API serves ``keel_jobs_queue_depth`` whether or not a worker runs beside it, by
reading the queue when scraped. A reading is reused for a few seconds, a slow or
failing database costs a scrape at most the timeout and keeps the last good reading,
and before any reading there are no samples (never zeros that would claim an empty
queue).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from keel.errors import DatabaseUnavailable
from keel.jobs import metrics
from keel.jobs.connector import QueueStats
from keel.jobs.states import JobState
from keel.testing import ManualClock


class _Queue:
    """Stands in for a job store's ``stats``: counts reads, answers what it is told."""

    def __init__(self) -> None:
        self.reads = 0
        self.answer: list[QueueStats] | BaseException = []
        self.hang = False

    async def stats(self, _now: datetime) -> list[QueueStats]:
        self.reads += 1
        if self.hang:
            await asyncio.sleep(30)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def _samples(collector: metrics.QueueDepthCollector) -> dict[tuple[str, ...], float]:
    return {
        (family.name, *sample.labels.values()): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


@pytest.fixture
def queue() -> _Queue:
    return _Queue()


def _collector(clock: ManualClock, queue: _Queue) -> metrics.QueueDepthCollector:
    return metrics.QueueDepthCollector(
        queue,  # type: ignore[arg-type]
        ["default", "exports"],
        clock=clock,
        cache_seconds=5.0,
        timeout_seconds=0.1,
    )


async def test_before_any_reading_the_families_exist_without_samples(queue: _Queue) -> None:
    collector = _collector(ManualClock(), queue)
    names = [family.name for family in collector.collect()]
    assert names == ["keel_jobs_queue_depth", "keel_jobs_oldest_ready_age_seconds"]
    assert _samples(collector) == {}


async def test_a_reading_covers_every_known_queue_and_state(queue: _Queue) -> None:
    queue.answer = [QueueStats("default", {JobState.READY: 2, JobState.RUNNING: 1}, 3.5)]
    collector = _collector(ManualClock(), queue)
    await collector.refresh()
    samples = _samples(collector)
    assert samples[("keel_jobs_queue_depth", "default", "ready")] == 2
    assert samples[("keel_jobs_queue_depth", "default", "running")] == 1
    assert samples[("keel_jobs_queue_depth", "exports", "ready")] == 0
    assert samples[("keel_jobs_oldest_ready_age_seconds", "default")] == 3.5
    assert samples[("keel_jobs_oldest_ready_age_seconds", "exports")] == 0
    assert len([key for key in samples if key[0] == "keel_jobs_queue_depth"]) == 2 * len(JobState)


async def test_scrapes_within_the_cache_cost_one_read(queue: _Queue) -> None:
    clock = ManualClock()
    collector = _collector(clock, queue)
    await asyncio.gather(*(collector.refresh() for _ in range(5)))
    clock.advance(4.9)
    await collector.refresh()
    assert queue.reads == 1
    clock.advance(0.2)
    await collector.refresh()
    assert queue.reads == 2


async def test_a_hanging_database_costs_a_scrape_the_timeout_and_keeps_the_last_reading(
    queue: _Queue,
) -> None:
    clock = ManualClock()
    collector = _collector(clock, queue)
    queue.answer = [QueueStats("default", {JobState.READY: 7}, 1.0)]
    await collector.refresh()
    queue.hang = True
    clock.advance(10)
    started = time.monotonic()
    await collector.refresh()
    assert time.monotonic() - started < 5  # bounded by the 0.1 s timeout, not the 30 s hang
    assert _samples(collector)[("keel_jobs_queue_depth", "default", "ready")] == 7


async def test_a_failing_database_keeps_the_last_reading(queue: _Queue) -> None:
    clock = ManualClock()
    collector = _collector(clock, queue)
    queue.answer = [QueueStats("default", {JobState.READY: 4}, 1.0)]
    await collector.refresh()
    queue.answer = DatabaseUnavailable("down")
    clock.advance(10)
    await collector.refresh()
    assert queue.reads == 2
    assert _samples(collector)[("keel_jobs_queue_depth", "default", "ready")] == 4

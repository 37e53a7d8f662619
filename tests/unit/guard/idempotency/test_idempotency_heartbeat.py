"""The lease heartbeat's rules, with a fake store and a sleep that only counts: no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from keel.errors import DatabaseUnavailable
from keel.guard.idempotency import IdempotencyScope, KeyRef
from keel.guard.idempotency.heartbeat import heartbeat
from keel.testing import ManualClock

REF = KeyRef("user-1", "org-1", "POST /v1/evidence", "key-1")


class Beats:
    """``extend`` answers from a script: True (held), False (lost) or an error."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.extended: list[datetime] = []
        self.done = asyncio.Event()

    async def extend(self, ref: KeyRef, *, owner: str, now: datetime) -> bool:
        self.extended.append(now)
        answer = self.answers.pop(0)
        if not self.answers:
            self.done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer


def scope_for(store: Beats, clock: ManualClock) -> IdempotencyScope:
    return IdempotencyScope(store=store, ref=REF, owner="me", clock=clock)  # type: ignore[arg-type]


class CountingSleep:
    """The beat's waits, the first one (a loop timer) included: each is counted, moves the
    clock on and ends at once."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.intervals: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    def later(self, seconds: float, callback: Callable[[], None]) -> asyncio.Handle:
        self.intervals.append(seconds)
        self.clock.advance(seconds)
        return asyncio.get_running_loop().call_soon(callback)


def beating_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__name__", "") == "_beat"]


async def test_it_extends_every_third_of_a_lease_until_the_claim_is_lost() -> None:
    clock = ManualClock()
    start = clock.now()
    store = Beats(True, True, False)
    sleep = CountingSleep(clock)
    keyed = scope_for(store, clock)
    async with heartbeat(keyed, lease_seconds=60, sleep=sleep, later=sleep.later):
        await asyncio.wait_for(store.done.wait(), 5)
        for _ in range(10):
            await asyncio.sleep(0)
    assert sleep.intervals == [20, 20, 20]  # no beat after the claim was lost
    assert [(t - start).total_seconds() for t in store.extended] == [20, 40, 60]


async def test_a_failed_beat_is_retried_at_the_next_one() -> None:
    clock = ManualClock()
    store = Beats(DatabaseUnavailable("down", retry_after=2), True, False)
    keyed = scope_for(store, clock)
    sleep = CountingSleep(clock)
    async with heartbeat(keyed, lease_seconds=3, sleep=sleep, later=sleep.later):
        await asyncio.wait_for(store.done.wait(), 5)
    assert len(store.extended) == 3


async def test_no_beat_once_the_outcome_is_written() -> None:
    clock = ManualClock()
    store = Beats(True)
    keyed = scope_for(store, clock)
    keyed.completed = True
    sleep = CountingSleep(clock)
    async with heartbeat(keyed, lease_seconds=3, sleep=sleep, later=sleep.later):
        for _ in range(10):
            await asyncio.sleep(0)
    assert store.extended == []
    assert sleep.intervals == [1]


async def test_leaving_the_block_stops_the_heartbeat() -> None:
    clock = ManualClock()
    store = Beats(True, True)
    never = asyncio.Event()
    counting = CountingSleep(clock)

    async def sleeps_forever(_seconds: float) -> None:
        await never.wait()

    keyed = scope_for(store, clock)
    async with heartbeat(keyed, lease_seconds=3, sleep=sleeps_forever, later=counting.later):
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(store.extended) == 1  # the first beat ran, the task waits for the next
        assert beating_tasks()
    assert len(store.extended) == 1
    assert not beating_tasks()


async def test_a_request_shorter_than_a_beat_starts_no_task_and_no_beat() -> None:
    """The common case pays for one loop timer, armed on entry and cancelled on exit."""
    store = Beats(True)
    keyed = scope_for(store, ManualClock())
    armed: list[tuple[float, asyncio.TimerHandle]] = []

    def later(seconds: float, callback: Callable[[], None]) -> asyncio.Handle:
        handle = asyncio.get_running_loop().call_later(seconds, callback)
        armed.append((seconds, handle))
        return handle

    async with heartbeat(keyed, lease_seconds=3, later=later):
        await asyncio.sleep(0)
        assert not beating_tasks()
    [(seconds, handle)] = armed
    assert seconds == 1
    assert handle.cancelled()
    assert store.extended == []
    assert not beating_tasks()


async def test_by_default_a_request_shorter_than_a_beat_makes_no_task() -> None:
    keyed = scope_for(Beats(True), ManualClock())
    async with heartbeat(keyed, lease_seconds=3):  # the running loop's timer
        await asyncio.sleep(0)
        assert not beating_tasks()
    assert not beating_tasks()

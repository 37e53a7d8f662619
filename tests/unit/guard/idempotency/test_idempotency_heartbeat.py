"""The lease heartbeat's rules, with a fake store and a sleep that only counts: no I/O."""

from __future__ import annotations

import asyncio
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
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.intervals: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


async def test_it_extends_every_third_of_a_lease_until_the_claim_is_lost() -> None:
    clock = ManualClock()
    start = clock.now()
    store = Beats(True, True, False)
    sleep = CountingSleep(clock)
    keyed = scope_for(store, clock)
    async with heartbeat(keyed, lease_seconds=60, sleep=sleep):
        await asyncio.wait_for(store.done.wait(), 5)
        for _ in range(10):
            await asyncio.sleep(0)
    assert sleep.intervals == [20, 20, 20]  # no beat after the claim was lost
    assert [(t - start).total_seconds() for t in store.extended] == [20, 40, 60]


async def test_a_failed_beat_is_retried_at_the_next_one() -> None:
    clock = ManualClock()
    store = Beats(DatabaseUnavailable("down", retry_after=2), True, False)
    keyed = scope_for(store, clock)
    async with heartbeat(keyed, lease_seconds=3, sleep=CountingSleep(clock)):
        await asyncio.wait_for(store.done.wait(), 5)
    assert len(store.extended) == 3


async def test_no_beat_once_the_outcome_is_written() -> None:
    clock = ManualClock()
    store = Beats(True)
    keyed = scope_for(store, clock)
    keyed.completed = True
    sleep = CountingSleep(clock)
    async with heartbeat(keyed, lease_seconds=3, sleep=sleep):
        for _ in range(10):
            await asyncio.sleep(0)
    assert store.extended == []
    assert sleep.intervals == [1]


async def test_leaving_the_block_stops_the_heartbeat() -> None:
    clock = ManualClock()
    store = Beats(True)
    never = asyncio.Event()

    async def sleeps_forever(_seconds: float) -> None:
        await never.wait()

    async with heartbeat(scope_for(store, clock), lease_seconds=3, sleep=sleeps_forever):
        await asyncio.sleep(0)
    assert store.extended == []
    assert not [t for t in asyncio.all_tasks() if "_beat" in repr(t.get_coro())]

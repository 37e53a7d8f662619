"""SQLite writers of one process take turns first come, first served (keel/db/writer_turns.py)."""

from __future__ import annotations

import asyncio

import pytest

from keel.db.writer_turns import WriterTurns


async def test_turns_are_taken_in_arrival_order() -> None:
    turns = WriterTurns(timeout=5)
    order: list[int] = []
    await turns.acquire()

    async def writer(number: int) -> None:
        async with turns.turn():
            order.append(number)

    waiting = [asyncio.create_task(writer(number)) for number in range(5)]
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3, 4]


async def test_a_free_turn_is_taken_without_scheduling_a_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    turns = WriterTurns(timeout=5)
    await turns.acquire()  # binds the turn to this loop
    turns.release()
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        scheduled.append(when)
        return call_at(when, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    await turns.acquire()
    turns.release()
    assert scheduled == []


async def test_a_writer_waiting_for_a_held_turn_gives_up_after_the_timeout() -> None:
    turns = WriterTurns(timeout=0.05)
    await turns.acquire()
    with pytest.raises(TimeoutError):
        await turns.acquire()
    turns.release()
    await turns.acquire()  # the abandoned wait left the turn usable
    turns.release()


async def test_a_free_turn_with_writers_still_queued_is_not_taken_ahead_of_them() -> None:
    turns = WriterTurns(timeout=5)
    order: list[str] = []
    await turns.acquire()

    async def writer(name: str) -> None:
        async with turns.turn():
            order.append(name)

    first = asyncio.create_task(writer("queued"))
    await asyncio.sleep(0)
    turns.release()  # free, but the queued writer has not run yet
    await writer("newcomer")
    await first
    assert order == ["queued", "newcomer"]

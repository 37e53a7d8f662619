"""The lifespan's exit steps share one budget: a stuck step is abandoned, named; the rest run."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from keel.observe.stop_budget import STEP_FLOOR_SECONDS, StopBudget
from keel.testing import capture_logs

BUDGET_SECONDS = 0.05


async def test_a_stuck_step_is_abandoned_and_logged_and_the_later_steps_still_run() -> None:
    budget = StopBudget(BUDGET_SECONDS)
    ran: list[str] = []
    cancelled = asyncio.Event()

    async def stuck() -> None:  # an SQLite write lock that never comes
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def database() -> None:
        ran.append("database")

    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        started = loop.time()
        async with AsyncExitStack() as stack:  # the lifespan's order: the database last
            stack.push_async_callback(budget.bounded("database", database))
            stack.push_async_callback(budget.bounded("observability", stuck))
        took = loop.time() - started

    assert cancelled.is_set()
    assert ran == ["database"]  # past the budget, the floor still lets it run
    assert took < BUDGET_SECONDS + STEP_FLOOR_SECONDS
    abandoned = [line for line in logs if line["event"] == "shutdown_step_abandoned"]
    assert [line["step"] for line in abandoned] == ["observability"]
    assert abandoned[0]["budget_seconds"] == BUDGET_SECONDS


async def test_a_steps_own_timeout_is_its_error_not_an_abandoned_step() -> None:
    async def times_out() -> None:
        raise TimeoutError("the statement's own timeout")

    with capture_logs() as logs, pytest.raises(TimeoutError, match="own timeout"):
        await StopBudget(10.0).bounded("database", times_out)()
    assert logs == []

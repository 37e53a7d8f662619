"""The wait in OPEN: short after a trip, growing with each failed round of probes, capped.

A breaker that waits 30 s before probing keeps a dependency that came back after 2 s
out of use for 28 s more (issue 14: ``/ready`` failing ~22 s after storage returned).
So the first wait is short, and only a dependency that keeps failing its probes is
probed less often — at most every ``max_wait_duration_in_open_state`` seconds. All on a
manual clock: nothing sleeps.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from keel.resilience import (
    BreakerConfig,
    BreakerGate,
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    MemoryBreakerStateStore,
    ResilienceMetrics,
)
from keel.resilience._state import TransitionReason
from keel.resilience._store import BreakerRecord
from keel.testing import ManualClock

S = BreakerState


class Down(Exception):
    pass


def make(clock: ManualClock, **overrides: object) -> CircuitBreaker:
    options: dict[str, object] = {
        "window_size": 4,
        "minimum_number_of_calls": 2,
        "wait_duration_in_open_state": 1.0,
        "max_wait_duration_in_open_state": 4.0,
        "wait_duration_multiplier": 2.0,
        "permitted_number_of_calls_in_half_open_state": 1,
    }
    options.update(overrides)
    return CircuitBreaker(
        "dep",
        BreakerConfig.model_validate(options),
        clock=clock,
        metrics=ResilienceMetrics(CollectorRegistry()),
    )


async def fail(breaker: CircuitBreaker) -> None:
    async def down() -> None:
        raise Down

    with pytest.raises(Down):
        await breaker.call(down)


async def succeed(breaker: CircuitBreaker) -> None:
    async def up() -> None:
        return None

    await breaker.call(up)


async def rejected_until(breaker: CircuitBreaker, clock: ManualClock, wait: float) -> None:
    """The breaker refuses calls for ``wait`` seconds of the clock, then lets a probe by."""
    clock.advance(wait - 0.01)
    with pytest.raises(BreakerOpen):
        await succeed(breaker)
    clock.advance(0.01)


@pytest.mark.parametrize(
    ("initial", "cap", "multiplier", "current", "expected"),
    [
        (1.0, 4.0, 2.0, 1.0, 2.0),
        (1.0, 4.0, 2.0, 2.0, 4.0),
        (1.0, 4.0, 2.0, 4.0, 4.0),  # capped
        (1.0, 5.0, 3.0, 3.0, 5.0),
        (2.0, None, 2.0, 2.0, 2.0),  # no cap configured: the wait never grows
        (30.0, 4.0, 2.0, 30.0, 30.0),  # a cap below the first wait never shortens it
        (1.0, 4.0, 1.0, 1.0, 1.0),  # multiplier 1: fixed waits
    ],
)
def test_next_wait_table(
    initial: float, cap: float | None, multiplier: float, current: float, expected: float
) -> None:
    config = BreakerConfig(
        wait_duration_in_open_state=initial,
        max_wait_duration_in_open_state=cap,
        wait_duration_multiplier=multiplier,
    )
    assert config.next_wait_in_open_state(current) == expected


@given(
    initial=st.floats(0.1, 60),
    cap=st.floats(0.1, 600),
    multiplier=st.floats(1, 10),
    rounds=st.integers(0, 30),
)
def test_the_wait_never_shrinks_and_never_passes_the_cap(
    initial: float, cap: float, multiplier: float, rounds: int
) -> None:
    config = BreakerConfig(
        wait_duration_in_open_state=initial,
        max_wait_duration_in_open_state=cap,
        wait_duration_multiplier=multiplier,
    )
    wait = initial
    for _ in range(rounds):
        grown = config.next_wait_in_open_state(wait)
        assert wait <= grown <= max(initial, cap)
        wait = grown


async def test_failed_probe_rounds_double_the_wait_up_to_the_cap_and_closing_resets_it() -> None:
    clock = ManualClock()
    breaker = make(clock)
    await fail(breaker)
    await fail(breaker)
    assert breaker.state is S.OPEN
    assert breaker.open_wait == 1.0
    for wait in (1.0, 2.0, 4.0, 4.0):  # each round's probe fails: 1, 2, 4, then capped
        await rejected_until(breaker, clock, wait)
        await fail(breaker)  # the probe
        assert breaker.state is S.OPEN
    assert breaker.open_wait == 4.0
    await rejected_until(breaker, clock, 4.0)
    await succeed(breaker)  # the dependency is back: the probe closes the breaker
    assert breaker.state is S.CLOSED
    # A new trip starts from the short wait again.
    await fail(breaker)
    await fail(breaker)
    assert breaker.state is S.OPEN
    assert breaker.open_wait == 1.0
    await rejected_until(breaker, clock, 1.0)
    await succeed(breaker)
    assert breaker.state is S.CLOSED


async def test_retry_in_counts_down_the_wait() -> None:
    clock = ManualClock()
    breaker = make(clock)
    assert breaker.retry_in() == 0.0
    await fail(breaker)
    await fail(breaker)
    assert breaker.retry_in() == pytest.approx(1.0)
    clock.advance(0.25)
    assert breaker.retry_in() == pytest.approx(0.75)


async def test_an_adopted_open_record_waits_the_local_wait_from_its_opening() -> None:
    clock = ManualClock()
    store = MemoryBreakerStateStore()
    breaker = CircuitBreaker(
        "dep",
        BreakerConfig(wait_duration_in_open_state=1.0, max_wait_duration_in_open_state=4.0),
        clock=clock,
        store=store,
        metrics=ResilienceMetrics(CollectorRegistry()),
    )
    await breaker.sync()
    await store.publish(
        BreakerRecord("dep", S.OPEN, clock.now(), TransitionReason.FAILURE_RATE_EXCEEDED, "other")
    )
    clock.advance(1.5)  # past the next sync
    await breaker.sync()
    assert breaker.state is S.OPEN
    assert breaker.open_wait == 1.0


async def test_a_gate_gives_back_a_probe_whose_call_ended_without_a_verdict() -> None:
    clock = ManualClock()
    gate = BreakerGate(make(clock))
    breaker = gate.breaker
    for _ in range(2):
        assert gate.allow()
        gate.record_failure()
    assert breaker.state is S.OPEN
    assert not gate.allow()
    assert gate.retry_after() == 1
    clock.advance(1.0)
    assert gate.allow()  # the one probe permit
    assert breaker.state is S.HALF_OPEN
    gate.record_ignored()  # e.g. the request was cancelled: no verdict
    assert gate.allow()  # the permit is back, at once (not after the stale timeout)
    gate.record_success()
    assert breaker.state is S.CLOSED

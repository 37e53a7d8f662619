"""The breaker's per-state behaviour is one table (``_state.RULES``), and the breaker does
what its state's row says: let every call through or ask, fill the window or not, trip
or not."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from keel.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    ResilienceMetrics,
    TransitionReason,
)
from keel.resilience._state import RULES
from keel.testing import ManualClock

ENTERED_BY_HAND = (
    BreakerState.CLOSED,
    BreakerState.DISABLED,
    BreakerState.METRICS_ONLY,
    BreakerState.FORCED_OPEN,
)


def test_every_state_has_one_row() -> None:
    assert set(RULES) == set(BreakerState)


def breaker_in(state: BreakerState) -> CircuitBreaker:
    config = BreakerConfig.model_validate(
        {"window_size": 4, "minimum_number_of_calls": 4, "failure_rate_threshold": 50.0}
    )
    breaker = CircuitBreaker(
        "dep", config, clock=ManualClock(), metrics=ResilienceMetrics(CollectorRegistry())
    )
    if state is not BreakerState.CLOSED:
        breaker.transition_to(state, TransitionReason.OPERATOR)
    return breaker


@pytest.mark.parametrize("state", ENTERED_BY_HAND)
def test_a_state_lets_calls_through_exactly_when_its_row_says(state: BreakerState) -> None:
    breaker = breaker_in(state)
    if RULES[state].permits_all:
        for _ in range(10):
            assert breaker.acquire_permission() == breaker.epoch
    else:
        with pytest.raises(BreakerOpen):
            breaker.acquire_permission()


@pytest.mark.parametrize("state", ENTERED_BY_HAND)
def test_a_state_fills_the_window_and_trips_exactly_when_its_row_says(
    state: BreakerState,
) -> None:
    breaker = breaker_in(state)
    if not RULES[state].permits_all:
        return  # no call runs: nothing to record
    for _ in range(4):
        breaker.on_failure(breaker.epoch, 0.0, now=0.0)
    rules = RULES[state]
    assert (breaker.stats().calls["failure"] == 4) is rules.records
    expected = BreakerState.OPEN if rules.trips else state
    assert breaker.state is expected


def test_the_state_a_breaker_leaves_for_open_takes_its_rules_along() -> None:
    async def scenario() -> BreakerState:
        breaker = breaker_in(BreakerState.CLOSED)
        for _ in range(4):
            breaker.on_failure(breaker.epoch, 0.0, now=0.0)
        await breaker.flush()
        with pytest.raises(BreakerOpen):
            breaker.acquire_permission()  # OPEN's row: no call passes without asking
        return breaker.state

    assert asyncio.run(scenario()) is BreakerState.OPEN

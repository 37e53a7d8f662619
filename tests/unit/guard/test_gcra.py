"""GCRA arithmetic: tables over made-up times and hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.guard.ratelimit.gcra import EPSILON, Rate, gcra

T0 = 1_800_000_000.0  # a made-up epoch instant in 2027, where float rounding is real


def run(rate: Rate, times_and_costs: list[tuple[float, int]]) -> list[bool]:
    tat: float | None = None
    out = []
    for now, n in times_and_costs:
        decision = gcra(tat, now, rate, n)
        if decision.allowed and n:
            tat = decision.tat
        out.append(decision.allowed)
    return out


def test_a_fresh_key_admits_exactly_its_burst_at_once() -> None:
    rate = Rate(limit=60, period=60, burst=5)
    assert run(rate, [(T0, 1)] * 6) == [True] * 5 + [False]


def test_remaining_counts_down_and_reset_grows_by_one_interval() -> None:
    rate = Rate(limit=10, period=10, burst=3)
    first = gcra(None, T0, rate)
    second = gcra(first.tat, T0, rate)
    assert (first.remaining, second.remaining) == (2, 1)
    assert first.reset_after == pytest.approx(1.0)
    assert second.reset_after == pytest.approx(2.0)


def test_denied_request_reports_wait_and_keeps_state() -> None:
    rate = Rate(limit=1, period=2, burst=1)
    first = gcra(None, T0, rate)
    denied = gcra(first.tat, T0 + 0.5, rate)
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(1.5)
    assert denied.tat == first.tat
    assert denied.remaining == 0


@pytest.mark.parametrize(
    ("offset", "allowed"),
    [(0.0, False), (0.999, False), (1.0, True), (1.5, True)],
)
def test_one_cell_comes_back_per_emission_interval(offset: float, allowed: bool) -> None:
    rate = Rate(limit=60, period=60, burst=2)
    tat = gcra(gcra(None, T0, rate).tat, T0, rate).tat
    assert gcra(tat, T0 + offset, rate).allowed is allowed


def test_cost_above_burst_never_fits() -> None:
    rate = Rate(limit=10, period=1, burst=4)
    decision = gcra(None, T0, rate, n=5)
    assert not decision.allowed
    assert math.isinf(decision.retry_after)


def test_zero_cost_peeks_without_consuming() -> None:
    rate = Rate(limit=10, period=10, burst=3)
    tat = gcra(None, T0, rate).tat
    peek = gcra(tat, T0, rate, n=0)
    assert peek.allowed
    assert peek.remaining == 2
    assert peek.tat == tat


def test_negative_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        gcra(None, T0, Rate(1, 1, 1), n=-1)


def test_clock_jumping_backwards_grants_nothing_and_does_not_lock_out() -> None:
    rate = Rate(limit=60, period=60, burst=5)
    tat: float | None = None
    for _ in range(5):
        tat = gcra(tat, T0, rate).tat
    # The wall clock jumps an hour back.
    back = gcra(tat, T0 - 3600, rate)
    assert not back.allowed
    # Treated as fully spent: one interval away, not an hour.
    assert back.retry_after == pytest.approx(1.0)
    assert back.remaining == 0
    # The clamped state is kept, so one cell comes back per interval from the new now.
    assert gcra(back.tat, T0 - 3599, rate).allowed


@pytest.mark.parametrize("bad", [(0, 1, 1), (1, 0, 1), (1, 1, 0), (-1, 1, 1)])
def test_rate_numbers_must_be_positive(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        Rate(*bad)


def test_scaled_rate_is_a_share_but_never_zero() -> None:
    assert Rate(100, 60, 10).scaled(4) == Rate(25, 60, 2)
    assert Rate(3, 60, 1).scaled(8) == Rate(1, 60, 1)
    assert Rate(3, 60, 1).scaled(1) == Rate(3, 60, 1)


rates = st.builds(
    Rate,
    limit=st.integers(1, 500),
    period=st.sampled_from([1.0, 2.5, 60.0, 900.0, 3600.0]),
    burst=st.integers(1, 40),
).filter(lambda r: r.emission_interval >= 0.001)


@settings(max_examples=300, deadline=None)
@given(
    rate=rates,
    steps=st.lists(
        st.tuples(st.floats(0, 3, allow_nan=False), st.integers(1, 5)), min_size=1, max_size=80
    ),
)
def test_never_admits_more_than_burst_plus_elapsed_times_rate(
    rate: Rate, steps: list[tuple[float, int]]
) -> None:
    now = T0
    tat: float | None = None
    admitted: list[tuple[float, int]] = []
    for fraction, n in steps:
        now += fraction * rate.emission_interval
        decision = gcra(tat, now, rate, n)
        if decision.allowed:
            tat = decision.tat
            admitted.append((now, n))
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, n in admitted[i:]:
            total += n
            bound = rate.burst + (end - start + EPSILON) / rate.emission_interval
            assert total <= bound + 1e-9


@settings(max_examples=300, deadline=None)
@given(
    rate=rates,
    spent=st.integers(0, 60),
    gap=st.floats(0, 5, allow_nan=False),
    n=st.integers(1, 5),
)
def test_retry_after_is_exact(rate: Rate, spent: int, gap: float, n: int) -> None:
    tat: float | None = None
    now = T0
    for _ in range(spent):
        decision = gcra(tat, now, rate)
        if decision.allowed:
            tat = decision.tat
    now += gap * rate.emission_interval
    decision = gcra(tat, now, rate, n)
    if decision.allowed or math.isinf(decision.retry_after):
        return
    # Admitted at exactly now + retry_after …
    assert gcra(tat, now + decision.retry_after, rate, n).allowed
    # … and not meaningfully earlier.
    if decision.retry_after > 1e-4:
        assert not gcra(tat, now + decision.retry_after - 1e-5, rate, n).allowed


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    steps=st.lists(
        st.tuples(st.floats(-50, 3, allow_nan=False), st.integers(1, 3)), min_size=1, max_size=60
    ),
)
def test_a_clock_moving_both_ways_never_grants_more_than_forward_time_allows(
    rate: Rate, steps: list[tuple[float, int]]
) -> None:
    now = T0
    tat: float | None = None
    total = 0
    forward = 0.0
    for fraction, n in steps:
        delta = fraction * rate.emission_interval
        now += delta
        forward += max(0.0, delta)
        decision = gcra(tat, now, rate, n)
        assert decision.retry_after >= 0
        # Keep whatever state the step returns, as the backends do on a clamp.
        tat = decision.tat
        if decision.allowed:
            total += n
    assert total <= rate.burst + (forward + EPSILON * len(steps)) / rate.emission_interval + 1e-9

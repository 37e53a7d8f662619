"""The autoscaler's decisions, as tables over made-up times (``keel.workerd.scaling``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.workerd.scaling import Autoscaler, Backlog, Direction, ScalePolicy, parse_range

POLICY = ScalePolicy(
    minimum=1,
    maximum=4,
    jobs_per_process=10,
    max_age_seconds=10.0,
    up_cooldown_seconds=5.0,
    down_cooldown_seconds=30.0,
    down_window_seconds=60.0,
)
IDLE = Backlog(in_hand=0, oldest_ready_age_seconds=0.0)


def test_a_burst_scales_up_at_once_to_what_the_depth_asks_within_max() -> None:
    scaler = Autoscaler(POLICY)
    event = scaler.observe(0.0, Backlog(in_hand=25, oldest_ready_age_seconds=0.0))
    assert event is not None
    assert (event.direction, event.before, event.after) == (Direction.UP, 1, 3)
    event = scaler.observe(10.0, Backlog(in_hand=500, oldest_ready_age_seconds=0.0))
    assert event is not None
    assert event.after == 4  # MAX


def test_an_old_ready_job_asks_for_one_more_process_even_with_a_shallow_queue() -> None:
    scaler = Autoscaler(POLICY)
    event = scaler.observe(0.0, Backlog(in_hand=2, oldest_ready_age_seconds=12.0))
    assert event is not None
    assert event.after == 2
    assert scaler.observe(1.0, Backlog(2, 12.0)) is None  # up cooldown: 5 s
    event = scaler.observe(5.0, Backlog(2, 12.0))
    assert event is not None
    assert event.after == 3


def test_an_age_inside_the_band_holds_the_count() -> None:
    scaler = Autoscaler(POLICY)
    scaler.observe(0.0, Backlog(2, 12.0))  # up to 2
    for now in range(1, 200, 5):  # age between half the threshold and the threshold
        assert scaler.observe(float(now), Backlog(2, 6.0)) is None
    assert scaler.count == 2


def test_scale_down_waits_for_a_whole_window_of_low_readings_then_steps_one_at_a_time() -> None:
    scaler = Autoscaler(POLICY)
    scaler.observe(0.0, Backlog(40, 0.0))  # up to 4
    assert scaler.count == 4
    events = []
    for now in range(1, 300):
        event = scaler.observe(float(now), IDLE)
        if event is not None:
            events.append((now, event.before, event.after))
    # The first low reading is at 1 s: the window holds the high one until 61 s.
    assert events == [(61, 4, 3), (91, 3, 2), (121, 2, 1)]


def test_a_busy_reading_inside_the_window_delays_the_scale_down() -> None:
    scaler = Autoscaler(POLICY)
    scaler.observe(0.0, Backlog(20, 0.0))  # up to 2
    for now in range(1, 50):
        assert scaler.observe(float(now), IDLE) is None
    scaler.observe(50.0, Backlog(20, 0.0))  # wants 2 again
    for now in range(51, 110):
        assert scaler.observe(float(now), IDLE) is None  # until 50 + 60
    event = scaler.observe(111.0, IDLE)
    assert event is not None
    assert event.direction is Direction.DOWN


def test_no_scale_down_before_a_whole_window_was_watched() -> None:
    scaler = Autoscaler(ScalePolicy(minimum=2, maximum=4, down_window_seconds=60.0))
    scaler.count = 3  # as after a restart of the supervisor with a larger count
    assert scaler.observe(0.0, IDLE) is None
    assert scaler.observe(59.0, IDLE) is None


def test_a_clock_that_jumps_backwards_causes_no_event() -> None:
    scaler = Autoscaler(POLICY)
    scaler.observe(100.0, Backlog(40, 0.0))  # up to 4 at t=100
    assert scaler.observe(50.0, Backlog(400, 0.0)) is None  # already at MAX
    assert scaler.observe(20.0, IDLE) is None  # before the last event: no cooldown passed


@given(
    readings=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=5, allow_nan=False),
            st.integers(min_value=0, max_value=1000),
            st.floats(min_value=0, max_value=100, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_the_count_stays_within_min_and_max_and_steps_down_by_one(
    readings: list[tuple[float, int, float]],
) -> None:
    scaler = Autoscaler(POLICY)
    now = 0.0
    for step, in_hand, age in readings:
        now += step
        before = scaler.count
        event = scaler.observe(now, Backlog(in_hand, age))
        assert POLICY.minimum <= scaler.count <= POLICY.maximum
        if event is None:
            assert scaler.count == before
        elif event.direction is Direction.DOWN:
            assert event.after == before - 1
        else:
            assert event.after > before


@pytest.mark.parametrize(
    ("text", "expected"), [("1..3", (1, 3)), ("2..2", (2, 2)), ("4", (4, 4)), (" 1..8 ", (1, 8))]
)
def test_parse_range(text: str, expected: tuple[int, int]) -> None:
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["0..2", "3..1", "a..b", "1..", "..3", ""])
def test_parse_range_refuses_what_is_not_min_max(text: str) -> None:
    with pytest.raises(ValueError, match="MIN"):
        parse_range(text)

"""Sliding windows: running aggregates always equal a brute-force recount."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keel.resilience import CountWindow, TimeWindow

codes = st.integers(min_value=0, max_value=3)  # FAILED = 1, SLOW = 2


def recount(codes_: list[int]) -> tuple[int, int, int]:
    return len(codes_), sum(c & 1 for c in codes_), sum(c >> 1 for c in codes_)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(min_value=1, max_value=12), calls=st.lists(codes, max_size=80))
def test_count_window_aggregates_equal_a_recount_of_the_last_n_calls(
    size: int, calls: list[int]
) -> None:
    window = CountWindow(size)
    for i, code in enumerate(calls):
        window.record(code, 0.0)
        expected = recount(calls[max(0, i + 1 - size) : i + 1])
        assert (window.calls, window.failed, window.slow) == expected
    window.clear()
    assert (window.calls, window.failed, window.slow) == (0, 0, 0)


# Steps move the clock by a (possibly negative) amount, then record a code.
steps = st.lists(
    st.tuples(st.floats(min_value=-3.0, max_value=15.0, allow_nan=False), codes), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(min_value=1, max_value=10), steps_=steps)
def test_time_window_aggregates_equal_a_recount_of_the_last_seconds(
    size: int, steps_: list[tuple[float, int]]
) -> None:
    window = TimeWindow(size)
    now = 1000.0
    newest: int | None = None
    recorded: list[tuple[int, int]] = []  # (effective second, code)
    for delta, code in steps_:
        now += delta
        second = int(now)
        # A clock running backwards records into the newest second seen.
        newest = second if newest is None else max(newest, second)
        recorded.append((newest, code))
        window.record(code, now)
        kept = [c for s, c in recorded if s > newest - size]
        assert (window.calls, window.failed, window.slow) == recount(kept)
        snap = window.snapshot(now)
        assert (snap.calls, snap.failed, snap.slow) == recount(kept)


def test_time_window_snapshot_expires_old_buckets_without_a_call() -> None:
    window = TimeWindow(5)
    window.record(1, 100.2)
    window.record(0, 103.9)
    assert window.snapshot(104.5).calls == 2
    assert window.snapshot(105.0).calls == 1  # second 100 left the window
    assert window.snapshot(200.0).calls == 0

"""Calendar windows in IANA zones, across DST, over made-up instants."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.guard.ratelimit.quota import (
    QuotaWindow,
    WindowPeriod,
    counter_key,
    quota_decision,
    window_bounds,
)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("zone", "now", "start", "end", "hours"),
    [
        # London springs forward 2026-03-29 01:00 UTC: a 23-hour day.
        ("Europe/London", ts(2026, 3, 29, 12), ts(2026, 3, 29, 0), ts(2026, 3, 29, 23), 23),
        # London falls back 2026-10-25 01:00 UTC: a 25-hour day starting at 23:00 UTC.
        ("Europe/London", ts(2026, 10, 25, 12), ts(2026, 10, 24, 23), ts(2026, 10, 26, 0), 25),
        # New York springs forward 2026-03-08 07:00 UTC.
        ("America/New_York", ts(2026, 3, 8, 12), ts(2026, 3, 8, 5), ts(2026, 3, 9, 4), 23),
        # New York falls back 2026-11-01 06:00 UTC.
        ("America/New_York", ts(2026, 11, 1, 12), ts(2026, 11, 1, 4), ts(2026, 11, 2, 5), 25),
        # An ordinary day, an instant before local midnight.
        ("America/New_York", ts(2026, 6, 2, 3, 59), ts(2026, 6, 1, 4), ts(2026, 6, 2, 4), 24),
        ("UTC", ts(2026, 6, 2, 0), ts(2026, 6, 2, 0), ts(2026, 6, 3, 0), 24),
    ],
)
def test_a_day_runs_from_local_midnight_to_local_midnight(
    zone: str, now: float, start: float, end: float, hours: int
) -> None:
    assert window_bounds(now, "day", ZoneInfo(zone)) == (start, end)
    assert end - start == hours * 3600


def test_a_daily_quota_resets_at_the_orgs_midnight_not_utcs() -> None:
    window = QuotaWindow("day", "America/New_York")
    before = window.bounds(ts(2026, 6, 2, 3, 59, 59))
    after = window.bounds(ts(2026, 6, 2, 4, 0, 0))
    assert before[1] == after[0] == ts(2026, 6, 2, 4)


@pytest.mark.parametrize(
    ("now", "start"),
    [
        # 01:30 EDT and, an hour later, 01:30 EST: two distinct local hours.
        (ts(2026, 11, 1, 5, 30), ts(2026, 11, 1, 5)),
        (ts(2026, 11, 1, 6, 30), ts(2026, 11, 1, 6)),
        # Spring forward: 01:59 EST, then 03:00 EDT one minute later.
        (ts(2026, 3, 8, 6, 59), ts(2026, 3, 8, 6)),
        (ts(2026, 3, 8, 7, 0), ts(2026, 3, 8, 7)),
    ],
)
def test_hours_across_new_york_transitions(now: float, start: float) -> None:
    assert window_bounds(now, "hour", ZoneInfo("America/New_York")) == (start, start + 3600)


def test_hours_follow_half_hour_offsets() -> None:
    # Kolkata is UTC+05:30: its hours start at half past in UTC.
    assert window_bounds(ts(2026, 1, 1, 10, 45), "hour", ZoneInfo("Asia/Kolkata")) == (
        ts(2026, 1, 1, 10, 30),
        ts(2026, 1, 1, 11, 30),
    )


def test_months_follow_local_midnights_and_dst() -> None:
    start, end = window_bounds(ts(2026, 3, 15), "month", ZoneInfo("Europe/London"))
    assert (start, end) == (ts(2026, 3, 1), ts(2026, 3, 31, 23))
    start, end = window_bounds(ts(2026, 12, 31, 23, 59), "month", ZoneInfo("UTC"))
    assert (start, end) == (ts(2026, 12, 1), ts(2027, 1, 1))


def test_a_midnight_that_does_not_exist_starts_the_day_at_the_transition() -> None:
    # Havana springs forward at 00:00 local on 2026-03-08 (to 01:00 CDT).
    zone = ZoneInfo("America/Havana")
    start, end = window_bounds(ts(2026, 3, 8, 12), "day", zone)
    assert datetime.fromtimestamp(start, zone).hour == 1
    assert end - start == 23 * 3600
    assert window_bounds(start - 1, "day", zone)[1] == start


ZONES = ["UTC", "Europe/London", "America/New_York", "America/Havana", "Asia/Kolkata"]


@settings(max_examples=400, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    period=st.sampled_from(["hour", "day", "month"]),
    now=st.floats(ts(2024, 1, 1), ts(2030, 1, 1), allow_nan=False),
)
def test_windows_hold_now_and_tile_time_without_gaps(
    zone: str, period: WindowPeriod, now: float
) -> None:
    tz = ZoneInfo(zone)
    start, end = window_bounds(now, period, tz)
    assert start <= now < end
    assert window_bounds(end, period, tz)[0] == end
    assert window_bounds(start, period, tz) == (start, end)


def test_unknown_time_zone_is_refused_at_construction() -> None:
    with pytest.raises(Exception, match="Mars/Olympus"):
        QuotaWindow("day", "Mars/Olympus")


def test_quota_decision_table() -> None:
    window = (1000.0, 2000.0)
    fits = quota_decision(used=9, limit=10, n=1, now=1500.0, window=window)
    assert (fits.allowed, fits.remaining, fits.retry_after, fits.reset_after) == (
        True,
        1,
        0.0,
        500.0,
    )
    full = quota_decision(used=10, limit=10, n=1, now=1500.0, window=window)
    assert (full.allowed, full.remaining, full.retry_after) == (False, 0, 500.0)
    too_big = quota_decision(used=8, limit=10, n=3, now=1500.0, window=window)
    assert not too_big.allowed


def test_each_window_counts_on_its_own_key() -> None:
    assert counter_key("u1", (1000.7, 2000.0)) != counter_key("u1", (2000.0, 3000.0))


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    period=st.sampled_from(["hour", "day", "month"]),
    # A clock that moves forwards, stands still and jumps backwards, by up to ~40 days.
    steps=st.lists(st.floats(-3.5e6, 3.5e6, allow_nan=False), min_size=1, max_size=30),
)
def test_a_windows_memo_always_answers_what_the_calendar_says(
    zone: str, period: WindowPeriod, steps: list[float]
) -> None:
    window = QuotaWindow(period, zone)
    other = QuotaWindow(period, zone)  # shares the module-wide memo, not this instance's
    now = ts(2026, 3, 1)
    for step in steps:
        now += step
        bounds = window_bounds(now, period, ZoneInfo(zone))
        assert window.bounds(now) == bounds
        assert window.span(now) == (bounds, counter_key("", bounds))
        assert other.span(now)[0] == bounds
        assert "u1" + window.span(now)[1] == counter_key("u1", bounds)


def test_the_memo_takes_no_part_in_equality_or_hashing() -> None:
    used = QuotaWindow("day", "Europe/London")
    used.span(ts(2026, 6, 2))
    fresh = QuotaWindow("day", "Europe/London")
    assert used == fresh
    assert hash(used) == hash(fresh)
    assert repr(used) == repr(fresh)

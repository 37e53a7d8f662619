"""Load shedding decisions: a table over pressure readings, and the middleware's order."""

from __future__ import annotations

import pytest

from keel.guard.shed import (
    LoadShedder,
    Priority,
    ShedThresholds,
    classify,
    shed_reason,
)
from keel.observe.watchdog import LoopWatchdog

T = ShedThresholds(max_in_flight=100, max_loop_lag_seconds=0.2)


@pytest.mark.parametrize(
    ("method", "path", "priority"),
    [
        ("GET", "/live", Priority.PROBE),
        ("GET", "/ready", Priority.PROBE),
        ("GET", "/metrics", Priority.PROBE),
        ("POST", "/v1/exports", Priority.BULK),
        ("POST", "/v1/evidence", Priority.BULK),
        ("POST", "/v1/recognitions", Priority.WRITE),
        ("DELETE", "/v1/recognitions/x", Priority.WRITE),
        ("GET", "/v1/recognitions", Priority.READ),
        ("GET", "/v1/exports/x/content", Priority.READ),
    ],
)
def test_classification(method: str, path: str, priority: Priority) -> None:
    assert classify(method, path) is priority


@pytest.mark.parametrize(
    ("in_flight", "lag", "shed"),
    [
        (0, 0.0, set()),
        (49, 0.0, set()),
        (50, 0.0, {Priority.BULK}),
        (80, 0.0, {Priority.BULK, Priority.WRITE}),
        (100, 0.0, {Priority.BULK, Priority.WRITE, Priority.READ}),
        (10_000, 9.0, {Priority.BULK, Priority.WRITE, Priority.READ}),
        (0, 0.1, {Priority.BULK}),
        (0, 0.17, {Priority.BULK, Priority.WRITE}),
        (0, 0.2, {Priority.BULK, Priority.WRITE, Priority.READ}),
    ],
)
def test_bulk_goes_first_then_writes_then_reads_and_probes_never(
    in_flight: int, lag: float, shed: set[Priority]
) -> None:
    refused = {p for p in Priority if shed_reason(p, in_flight, lag, T) is not None}
    assert refused == shed
    assert Priority.PROBE not in refused


def test_lag_is_smoothed_so_one_hiccup_does_not_shed() -> None:
    watchdog = LoopWatchdog()
    watchdog.observe(1.0)
    assert watchdog.smoothed_lag_seconds < 0.5
    assert watchdog.lag_seconds == 1.0  # /live still sees the raw reading
    for _ in range(30):
        watchdog.observe(1.0)
    assert watchdog.smoothed_lag_seconds > 0.9
    for _ in range(30):
        watchdog.observe(-0.01)  # an early wake-up counts as no lag, never negative
    assert 0 <= watchdog.smoothed_lag_seconds < 0.01
    assert watchdog.lag_seconds == 0.0


def test_the_shedder_reads_the_one_watchdog_that_feeds_live() -> None:
    watchdog = LoopWatchdog()
    shedder = LoadShedder(T, watchdog)
    assert shedder.pressure == 0.0
    for _ in range(30):
        watchdog.observe(0.2)
    assert shedder.pressure > 0.95  # at the read threshold: the lag /live reports sheds reads

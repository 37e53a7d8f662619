"""The rollups count what the SLO rules count, per minute, and the report's arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keel.observe.metrics import request_histogram
from keel.slo import load_objectives
from keel.slo.report import build_report, report_windows, window_sums
from keel.slo.rollup import MAX_PENDING_MINUTES, RollupCounter, minute_of

HISTOGRAM = request_histogram(0.3)
AVAILABILITY, LATENCY = load_objectives(None, HISTOGRAM)
T0 = 1_800_000_000.0  # a whole minute
ROUTE = "/v1/recognitions"


def test_each_request_counts_for_every_slo_whose_selector_takes_it() -> None:
    counter = RollupCounter((AVAILABILITY, LATENCY))
    counter.record("POST", ROUTE, 201, False, 0.3, T0)  # at the threshold: good (le)
    counter.record("POST", ROUTE, 201, False, 0.31, T0 + 1)  # slow
    counter.record("GET", ROUTE, 503, False, 0.01, T0 + 59.9)  # fast 5xx
    counter.record("GET", ROUTE, 499, False, 0.01, T0 + 60)  # next minute; 4xx is good
    minute = minute_of(T0)
    assert counter.take() == {
        ("api-availability", minute): [3, 2],
        ("api-latency", minute): [3, 2],
        ("api-availability", minute + 1): [1, 1],
        ("api-latency", minute + 1): [1, 1],
    }
    assert counter.take() == {}


def test_probes_metrics_and_paths_outside_the_api_are_not_counted() -> None:
    counter = RollupCounter((AVAILABILITY, LATENCY))
    counter.record("GET", "/ready", 503, True, 9.0, T0)
    counter.record("GET", "/metrics", 500, True, 9.0, T0)
    counter.record("GET", "/docs", 500, False, 9.0, T0)
    counter.record("GET", "unmatched", 500, False, 9.0, T0)
    assert counter.take() == {}


def test_counts_given_back_after_a_failed_flush_add_up_and_stay_bounded() -> None:
    counter = RollupCounter((AVAILABILITY,))
    counter.record("POST", ROUTE, 500, False, 0.1, T0)
    failed = counter.take()
    counter.record("POST", ROUTE, 200, False, 0.1, T0)
    counter.give_back(failed)
    assert counter.take() == {("api-availability", minute_of(T0)): [2, 1]}

    oldest = minute_of(T0)
    flood = {("api-availability", oldest + m): (1, 1) for m in range(MAX_PENDING_MINUTES + 5)}
    counter.give_back(flood)
    kept = counter.take()
    assert len(kept) == MAX_PENDING_MINUTES
    assert min(minute for _, minute in kept) == oldest + 5  # the oldest went first


def test_burn_rates_remaining_budget_and_alerts_from_window_counts() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    # 1 % errors in the last 5 minutes; none before, for 30 days at 1,000 a minute.
    minutes = {
        now - timedelta(minutes=m): (1000, 990 if m <= 5 else 1000) for m in range(1, 30 * 1440)
    }
    sums = window_sums(minutes, now, report_windows(AVAILABILITY))
    report = build_report(AVAILABILITY, sums)
    five = report.windows[0]
    assert (five.window, five.total, five.good) == ("5m", 5000, 4950)
    assert five.error_ratio == 0.01
    assert round(five.burn_rate or 0, 6) == 20.0  # 1 % over a 0.05 % budget
    hour = next(r for r in report.windows if r.window == "1h")
    assert round(hour.burn_rate or 0, 6) == round(50 / 60000 / 0.0005, 6)
    assert [(a.name, a.firing) for a in report.alerts] == [
        ("KeelApiAvailabilityFastBurn", False),  # the 1h window holds it back
        ("KeelApiAvailabilitySlowBurn", False),
        ("KeelApiAvailabilityBudgetBurn", False),
    ]
    period = report.period
    assert period.window == "30d"
    spent = 50 / (0.0005 * period.total)
    assert abs(report.budget_remaining - (1 - spent)) < 1e-12


def test_a_window_without_requests_has_no_ratio_and_fires_nothing() -> None:
    report = build_report(LATENCY, {})
    assert all(r.error_ratio is None and r.burn_rate is None for r in report.windows)
    assert report.budget_remaining == 1.0
    assert not any(alert.firing for alert in report.alerts)

"""Canary analysis: the binned Mann-Whitney U against brute force, and the verdicts on real
``/metrics`` text written by the server's own histogram."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from keel.deploy.canary import (
    Thresholds,
    Traffic,
    Verdict,
    analyse,
    mann_whitney_greater,
    read_traffic,
    u_statistic,
    u_variance,
)
from keel.observe.metrics import Metrics

Bins = list[int]
bins = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6)


def _pairs(first: Bins, second: Bins) -> tuple[list[int], list[int]]:
    """The samples behind two bin-count lists: each observation is its bin's index."""
    return (
        [i for i, count in enumerate(first) for _ in range(count)],
        [i for i, count in enumerate(second) for _ in range(count)],
    )


def _brute_u(xs: list[int], ys: list[int]) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in xs for y in ys)


@given(st.data())
def test_binned_u_equals_counting_every_pair(data: st.DataObject) -> None:
    first = data.draw(bins)
    second = data.draw(st.lists(st.integers(0, 6), min_size=len(first), max_size=len(first)))
    xs, ys = _pairs(first, second)
    assert u_statistic(first, second) == _brute_u(xs, ys)
    assert u_statistic(first, second) + u_statistic(second, first) == len(xs) * len(ys)


@settings(max_examples=60)
@given(st.data())
def test_tie_corrected_variance_equals_the_permutation_variance(data: st.DataObject) -> None:
    first = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    second = data.draw(st.lists(st.integers(0, 3), min_size=len(first), max_size=len(first)))
    xs, ys = _pairs(first, second)
    pooled = xs + ys
    if not xs or not ys or len(pooled) > 10:
        return
    # Every way of choosing which observations are the first sample, equally likely under H0.
    values = [
        _brute_u(
            [pooled[i] for i in chosen], [pooled[i] for i in range(len(pooled)) if i not in chosen]
        )
        for chosen in map(set, itertools.combinations(range(len(pooled)), len(xs)))
    ]
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    assert mean == pytest.approx(len(xs) * len(ys) / 2)
    assert u_variance(first, second) == pytest.approx(variance, abs=1e-9)


def test_the_one_sided_p_value_finds_a_slower_sample_and_not_a_faster_one() -> None:
    rng = random.Random(7)
    slow = [0] * 10
    fast = [0] * 10
    for _ in range(300):
        slow[min(9, int(rng.expovariate(1.0) + 2))] += 1
        fast[min(9, int(rng.expovariate(1.0)))] += 1
    assert mann_whitney_greater(slow, fast).p_greater < 1e-6
    assert mann_whitney_greater(fast, slow).p_greater > 0.99
    same = mann_whitney_greater(fast, fast)
    assert same.effect == pytest.approx(0.5)
    assert same.p_greater > 0.4


def _scrape(latencies: list[float], *, errors: int = 0, probes: int = 0, slo: float = 0.3) -> str:
    """``/metrics`` text from the server's own Metrics object (the real names and labels)."""
    metrics = Metrics(slo_threshold=slo, version="1", release_id="r", git_sha="s")
    histogram = metrics.request_duration
    for index, seconds in enumerate(latencies):
        status = "500" if index < errors else "200"
        histogram.labels("GET", "/v1/recognitions", status, "true").observe(seconds)
    for _ in range(probes):
        histogram.labels("GET", "/ready", "503", "false").observe(0.001)
    registry: CollectorRegistry = metrics.registry
    return generate_latest(registry).decode()


def _latencies(count: int, centre: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0005, rng.gauss(centre, centre / 4)) for _ in range(count)]


def test_reading_the_server_histogram_counts_requests_errors_and_skips_probes() -> None:
    traffic = read_traffic(_scrape([0.01, 0.02, 0.2], errors=1, probes=50))
    assert (traffic.requests, traffic.errors) == (3, 1)
    assert sum(traffic.counts) == 3
    assert traffic.buckets[-1] == math.inf
    assert read_traffic("") == Traffic(0, 0, (math.inf,), (0,))


def test_interval_traffic_is_the_difference_of_two_scrapes() -> None:
    before = read_traffic(_scrape([0.01] * 10, errors=2))
    after = read_traffic(_scrape([0.01] * 10 + [0.5] * 5, errors=3))
    interval = after.since(before)
    assert (interval.requests, interval.errors, sum(interval.counts)) == (5, 1, 5)
    restarted = read_traffic(_scrape([0.01] * 4))
    assert restarted.since(before) == restarted
    assert after.since(read_traffic("")) == after  # the first scrape, before any request


THRESHOLDS = Thresholds(min_requests=100, max_p99_seconds=1.0)


def test_a_healthy_canary_passes() -> None:
    baseline = read_traffic(_scrape(_latencies(400, 0.02, 1)))
    canary = read_traffic(_scrape(_latencies(120, 0.02, 2)))
    result = analyse(canary, baseline, THRESHOLDS)
    assert result.verdict is Verdict.PASS, result.reasons


def test_too_little_traffic_is_inconclusive_never_a_pass_even_when_all_fail() -> None:
    baseline = read_traffic(_scrape(_latencies(400, 0.02, 1)))
    quiet = read_traffic(_scrape(_latencies(99, 0.02, 3)))
    assert analyse(quiet, baseline, THRESHOLDS).verdict is Verdict.INCONCLUSIVE
    broken_but_quiet = read_traffic(_scrape(_latencies(20, 0.02, 3), errors=20))
    assert analyse(broken_but_quiet, baseline, THRESHOLDS).verdict is Verdict.INCONCLUSIVE
    assert analyse(baseline, quiet, THRESHOLDS).verdict is Verdict.INCONCLUSIVE


def test_a_canary_answering_five_percent_errors_fails() -> None:
    baseline = read_traffic(_scrape(_latencies(400, 0.02, 1), errors=1))
    canary = read_traffic(_scrape(_latencies(200, 0.02, 4), errors=10))
    result = analyse(canary, baseline, THRESHOLDS)
    assert result.verdict is Verdict.FAIL
    assert any("error rate" in reason for reason in result.reasons)


def test_a_canary_two_hundred_ms_slower_fails_on_the_u_test_and_the_p99_limit() -> None:
    baseline = read_traffic(_scrape(_latencies(400, 0.05, 1)))
    canary = read_traffic(_scrape(_latencies(200, 0.25, 5)))
    result = analyse(canary, baseline, Thresholds(min_requests=100, max_p99_seconds=0.25))
    assert result.verdict is Verdict.FAIL
    assert any("Mann-Whitney" in reason for reason in result.reasons)
    assert any("p99" in reason for reason in result.reasons)
    # Without the absolute limit the statistical test alone still fails it.
    alone = analyse(canary, baseline, Thresholds(min_requests=100))
    assert alone.verdict is Verdict.FAIL

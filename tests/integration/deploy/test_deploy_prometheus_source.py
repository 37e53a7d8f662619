"""The canary analysis through a real Prometheus (the Debian package, on 127.0.0.1, scraping
stand-in versions every second): the Prometheus source reads what a direct scrape reads, and
the PromQL that ``keel deploy manifests`` puts in the Argo ``AnalysisTemplate`` reaches the
local analysis' verdict and numbers on the same data."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.support.prometheus import prometheus_server, query, wait_until
from tests.support.versions import VersionServer

from keel.deploy.canary import Thresholds, Traffic, Verdict, analyse, read_traffic
from keel.deploy.prometheus_source import CanaryQueries, PrometheusMetrics, version_metrics
from keel.deploy.rollout import HttpMetrics
from keel.observe.metrics import duration_buckets

THRESHOLDS = Thresholds(min_requests=100, max_p99_seconds=0.15)
BUCKETS = duration_buckets(0.3)  # the stand-ins' histogram (slo_threshold=0.3)

# name → (fast requests at 20 ms, slower ones at 60 ms, slow ones at 200 ms, 5xx)
SHAPES = {
    "healthy-baseline": (396, 4, 0, 2),
    "healthy-canary": (396, 4, 0, 2),
    "bad-baseline": (396, 4, 0, 2),
    "bad-canary": (0, 0, 400, 20),
    "quiet-baseline": (10, 0, 0, 0),
    "quiet-canary": (10, 0, 0, 0),
}


def _load(server: VersionServer, fast: int, slower: int, slow: int, errors: int) -> None:
    """Observe the shape straight into the stand-in's histogram; the first ``errors`` are 5xx."""
    histogram = server.metrics.request_duration
    latencies = [0.02] * fast + [0.06] * slower + [0.2] * slow
    for index, seconds in enumerate(latencies):
        status = "500" if index < errors else "200"
        histogram.labels("GET", "/", status, "true").observe(seconds)
    for _ in range(50):  # probes: never part of the analysis
        histogram.labels("GET", "/ready", "200", "false").observe(5.0)


@pytest.fixture(scope="module")
def versions() -> Iterator[dict[str, VersionServer]]:
    servers = {name: VersionServer(name) for name in SHAPES}
    for name, server in servers.items():
        _load(server, *SHAPES[name])
        server.__enter__()
    try:
        yield servers
    finally:
        with ThreadPoolExecutor(len(servers)) as pool:  # each shutdown waits out a poll
            list(pool.map(lambda server: server.__exit__(None, None, None), servers.values()))


@pytest.fixture(scope="module")
def prometheus(
    versions: dict[str, VersionServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    targets = [f"127.0.0.1:{server.port}" for server in versions.values()]
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), targets) as url:
        wait_until(
            url,
            "count(count by (instance) (http_server_request_duration_seconds_count))",
            len(targets),
            timeout=30.0,
        )
        yield url


def _instance(server: VersionServer) -> dict[str, str]:
    return {"instance": f"127.0.0.1:{server.port}"}


def _direct(server: VersionServer) -> Traffic:
    return read_traffic(httpx.get(f"http://127.0.0.1:{server.port}/metrics").text)


def test_the_prometheus_source_reads_what_a_direct_scrape_reads(
    versions: dict[str, VersionServer], prometheus: str
) -> None:
    for name in ("healthy-canary", "bad-canary", "quiet-canary"):  # errors, probes, few
        source = PrometheusMetrics(prometheus, _instance(versions[name]))
        assert read_traffic(asyncio.run(source.scrape())) == _direct(versions[name]), name


def test_the_setting_picks_prometheus_by_the_versions_instance(prometheus: str) -> None:
    chosen = version_metrics(prometheus, "http://127.0.0.1:8123/metrics")
    assert isinstance(chosen, PrometheusMetrics)
    assert (chosen.base_url, chosen.matchers) == (prometheus, {"instance": "127.0.0.1:8123"})
    assert isinstance(version_metrics(None, "http://127.0.0.1:8123/metrics"), HttpMetrics)


@pytest.mark.parametrize(
    ("pair", "verdict"),
    [("healthy", Verdict.PASS), ("bad", Verdict.FAIL), ("quiet", Verdict.INCONCLUSIVE)],
)
def test_the_analysis_queries_agree_with_the_local_analysis(
    versions: dict[str, VersionServer], prometheus: str, pair: str, verdict: Verdict
) -> None:
    canary, baseline = versions[f"{pair}-canary"], versions[f"{pair}-baseline"]
    local = analyse(_direct(canary), _direct(baseline), THRESHOLDS)
    assert local.verdict is verdict
    queries = CanaryQueries(
        _instance(canary), _instance(baseline), THRESHOLDS, BUCKETS, window=None
    )
    values: dict[str, float] = {}
    failed: set[str] = set()
    for name, (expression, limit) in queries.verdict_queries().items():
        result = query(prometheus, expression)
        if result:
            values[name] = float(result[0]["value"][1])
            if values[name] > limit:
                failed.add(name)
    least = query(prometheus, queries.least_requests)
    assert float(least[0]["value"][1]) == min(local.canary.requests, local.baseline.requests)
    if verdict is Verdict.INCONCLUSIVE:
        assert values == {}  # too little traffic: no measurement, never a pass
        return
    assert bool(failed) == (verdict is Verdict.FAIL)
    details = local.details
    assert values["error-rate"] == pytest.approx(details["canary_error_rate"])
    assert values["error-rate-increase"] == pytest.approx(
        details["canary_error_rate"] - details["baseline_error_rate"]
    )
    significant = details["latency_p_value"] < THRESHOLDS.latency_alpha
    assert values["latency-slower"] == pytest.approx(
        details["latency_effect"] if significant else 0.0
    )
    if pair == "bad":
        assert failed == {"error-rate", "error-rate-increase", "latency-slower", "latency-p99"}
        assert len(local.reasons) == 4


def test_the_windowed_queries_of_the_analysis_template_are_valid_promql(
    versions: dict[str, VersionServer], prometheus: str
) -> None:
    queries = CanaryQueries(
        _instance(versions["bad-canary"]),
        _instance(versions["bad-baseline"]),
        THRESHOLDS,
        BUCKETS,
        window="1m",
    )
    for expression, _ in queries.verdict_queries().values():
        query(prometheus, expression)  # asserts Prometheus accepted it
    query(prometheus, queries.least_requests)


def test_an_unreachable_prometheus_is_an_http_error(tmp_path: Path) -> None:
    with pytest.raises(httpx.HTTPError):
        asyncio.run(PrometheusMetrics("http://127.0.0.1:9", {"instance": "x"}).scrape())

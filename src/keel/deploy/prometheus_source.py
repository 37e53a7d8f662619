"""The canary analysis in Prometheus' terms: PromQL for its inputs and its tests, and a
metrics source reading both versions from Prometheus' HTTP API.

One set of query builders serves two readers, so they cannot drift:

* :class:`PrometheusMetrics` — for the local canary when ``KEEL_DEPLOY_PROMETHEUS_URL``
  is set: it asks Prometheus for one version's request counters (per status
  class and per histogram bucket, user-facing series only) and hands them to
  :func:`keel.deploy.canary.read_traffic` as exposition text, so the analysis,
  its interval arithmetic (:meth:`Traffic.since`) and its verdict are the ones
  used with direct ``/metrics`` scrapes;
* :class:`CanaryQueries` — the same analysis as PromQL over a window, for the
  Argo Rollouts ``AnalysisTemplate`` that ``keel deploy manifests`` writes: the
  minimum sample, the absolute and relative error-rate limits, the p99 limit
  and the Mann-Whitney U test on the histogram buckets, each against the
  numbers of one :class:`~keel.deploy.canary.Thresholds`.

The U test needs no function PromQL lacks: bucket edges are known (Keel's own
histogram), so U, the tie-corrected variance and z are sums over buckets, and
``p < alpha`` is ``z > z_alpha`` with ``z_alpha`` computed here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import httpx

from keel.deploy.canary import REQUEST_HISTOGRAM, STATUS_LABEL, MetricsUnreadable, Thresholds
from keel.deploy.rollout import HttpMetrics

USER_FACING = 'slo!="false"'  # probes and /metrics itself say nothing about what users get


def _go_float(value: float) -> str:
    """A bucket edge as Prometheus clients write ``le`` (``1.0``, ``+Inf``)."""
    if value == math.inf:
        return "+Inf"
    return repr(float(value))


def le_matcher(bound: float) -> str:
    """``le`` for one edge, in the client's spelling or the normalised one (``1.0`` | ``1``)."""
    spelled = _go_float(bound)
    short = spelled.removesuffix(".0")
    return f'le="{spelled}"' if short == spelled else f'le=~"{spelled}|{short}"'


def selector(matchers: Mapping[str, str], *extra: str) -> str:
    labels = [f'{name}="{value}"' for name, value in matchers.items()]
    return "{" + ",".join([*labels, USER_FACING, *extra]) + "}"


@dataclass(frozen=True, slots=True)
class CanaryQueries:
    """PromQL for the canary analysis over the last ``window`` of both versions' series.

    ``canary`` and ``baseline`` are the label matchers that pick each version's
    series (an ``instance`` on one machine; a pod-template hash under Argo).
    Every verdict query is empty — an inconclusive measurement — until both
    versions served ``min_requests`` in the window.
    """

    canary: Mapping[str, str]
    baseline: Mapping[str, str]
    thresholds: Thresholds
    buckets: tuple[float, ...]  # the histogram's finite edges, ascending
    window: str | None = "1m"  # None: the counters' totals since each process started

    def _over_window(self, series: str) -> str:
        return series if self.window is None else f"increase({series}[{self.window}])"

    def _increase(self, suffix: str, matchers: Mapping[str, str], *extra: str) -> str:
        series = f"{REQUEST_HISTOGRAM}_{suffix}{selector(matchers, *extra)}"
        return f"sum({self._over_window(series)})"

    def requests(self, matchers: Mapping[str, str]) -> str:
        return self._increase("count", matchers)

    def errors(self, matchers: Mapping[str, str]) -> str:
        return self._increase("count", matchers, f'{STATUS_LABEL}=~"5.."')

    def _enough(self) -> str:
        """A one-element vector while both versions have their minimum sample, else empty."""
        least = self.thresholds.min_requests
        return (
            f"(({self.requests(self.canary)}) >= {least}) "
            f"and on() (({self.requests(self.baseline)}) >= {least})"
        )

    def _judged(self, expression: str) -> str:
        return f"({expression}) and on() ({self._enough()})"

    def _rate(self, matchers: Mapping[str, str]) -> str:
        return f"(({self.errors(matchers)}) or vector(0)) / ({self.requests(matchers)})"

    @property
    def least_requests(self) -> str:
        """The smaller of the two versions' request counts in the window."""
        return (
            f"clamp_max(({self.requests(self.canary)}) or vector(0), "
            f"scalar(({self.requests(self.baseline)}) or vector(0)))"
        )

    @property
    def error_rate(self) -> str:
        """The canary's 5xx share; fails above ``max_error_rate``."""
        return self._judged(self._rate(self.canary))

    @property
    def error_rate_increase(self) -> str:
        """Canary's 5xx share minus the baseline's; fails above ``max_error_rate_increase``."""
        return self._judged(f"{self._rate(self.canary)} - {self._rate(self.baseline)}")

    @property
    def p99(self) -> str:
        """The canary's p99 (interpolated in its bucket; the local analysis takes the bucket's
        upper edge, so this is never the stricter of the two)."""
        buckets = self._over_window(f"{REQUEST_HISTOGRAM}_bucket{selector(self.canary)}")
        return self._judged(f"histogram_quantile(0.99, sum by (le) ({buckets}))")

    def _cumulative(self, matchers: Mapping[str, str], bound: float) -> str:
        return f"scalar({self._increase('bucket', matchers, le_matcher(bound))})"

    @property
    def z_alpha(self) -> float:
        """``p < latency_alpha`` (one-sided, normal approximation) is ``z > z_alpha``."""
        return NormalDist().inv_cdf(1 - self.thresholds.latency_alpha)

    @property
    def latency_effect(self) -> str:
        """P(canary slower) when the U test finds the canary slower at ``latency_alpha``, else
        0; fails above ``0.5 + min_effect`` — the local analysis' test, bucket by bucket."""
        edges = [*self.buckets, math.inf]
        canary = [self._cumulative(self.canary, edge) for edge in edges]
        baseline = [self._cumulative(self.baseline, edge) for edge in edges]
        n1, n2 = canary[-1], baseline[-1]
        u_terms, tie_terms = [], []
        for index in range(len(edges)):
            c_now, b_now = canary[index], baseline[index]
            c_in = c_now if index == 0 else f"({c_now} - {canary[index - 1]})"
            b_in = b_now if index == 0 else f"({b_now} - {baseline[index - 1]})"
            b_sum = b_now if index == 0 else f"({b_now} + {baseline[index - 1]})"
            u_terms.append(f"{c_in} * {b_sum} / 2")
            tie_terms.append(f"({c_in} + {b_in}) ^ 3 - ({c_in} + {b_in})")
        u = "(" + " + ".join(u_terms) + ")"
        ties = "(" + " + ".join(tie_terms) + ")"
        n = f"({n1} + {n2})"
        variance = f"({n1} * {n2} / 12 * (({n} + 1) - {ties} / ({n} * ({n} - 1))))"
        z = f"(({u} - {n1} * {n2} / 2 - 0.5) / {variance} ^ 0.5)"
        effect = f"({u} / ({n1} * {n2}))"
        slower = f"vector({effect}) * (vector({z}) > bool {self.z_alpha!r})"
        return self._judged(slower)

    def verdict_queries(self) -> dict[str, tuple[str, float]]:
        """Each verdict query with the limit above which it fails the canary."""
        limits = self.thresholds
        queries = {
            "error-rate": (self.error_rate, limits.max_error_rate),
            "error-rate-increase": (self.error_rate_increase, limits.max_error_rate_increase),
            "latency-slower": (self.latency_effect, 0.5 + limits.min_effect),
        }
        if limits.max_p99_seconds is not None:
            queries["latency-p99"] = (self.p99, limits.max_p99_seconds)
        return queries


# --- reading one version from Prometheus ------------------------------------------------


def version_metrics(
    prometheus_url: str | None, metrics_url: str
) -> PrometheusMetrics | HttpMetrics:
    """Where the analysis reads one version: Prometheus when configured, picking the version's
    series by the ``instance`` it scrapes (``host:port`` of ``metrics_url``), else the URL."""
    if not prometheus_url:
        return HttpMetrics(metrics_url)
    url = httpx.URL(metrics_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return PrometheusMetrics(prometheus_url, {"instance": f"{url.host}:{port}"})


class PrometheusMetrics:
    """One version's request counters from Prometheus, as ``/metrics`` text for the analysis.

    Raw counters (not ``increase``): the rollout subtracts two readings itself,
    exactly as with direct scrapes, so an interval means the same either way.
    """

    def __init__(self, base_url: str, matchers: Mapping[str, str], *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.matchers = dict(matchers)
        self.timeout = timeout

    async def scrape(self) -> str:
        series = selector(self.matchers)
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            buckets = await self._query(client, f"sum by (le) ({REQUEST_HISTOGRAM}_bucket{series})")
            counts = await self._query(
                client, f"sum by ({STATUS_LABEL}) ({REQUEST_HISTOGRAM}_count{series})"
            )
        return exposition(buckets, counts)

    async def _query(self, client: httpx.AsyncClient, query: str) -> list[dict[str, object]]:
        response = await client.get(f"{self.base_url}/api/v1/query", params={"query": query})
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success" or body["data"]["resultType"] != "vector":
            raise MetricsUnreadable(f"Prometheus answered {body.get('error') or body}")
        result: list[dict[str, object]] = body["data"]["result"]
        return result


def _value(sample: Mapping[str, object]) -> float:
    value = sample["value"]
    if not isinstance(value, Sequence) or len(value) != 2:
        raise MetricsUnreadable(f"not an instant sample: {value!r}")
    return float(value[1])


def exposition(
    buckets: Sequence[Mapping[str, object]], counts: Sequence[Mapping[str, object]]
) -> str:
    """Prometheus' vectors for one version, as the exposition text the analysis reads."""
    lines = [f"# TYPE {REQUEST_HISTOGRAM} histogram"]
    for sample in buckets:
        labels = sample["metric"]
        if not isinstance(labels, Mapping) or "le" not in labels:
            raise MetricsUnreadable("a bucket sample without its le label")
        lines.append(f'{REQUEST_HISTOGRAM}_bucket{{le="{labels["le"]}"}} {_value(sample)!r}')
    for sample in counts:
        labels = sample["metric"]
        status = labels.get(STATUS_LABEL, "") if isinstance(labels, Mapping) else ""
        lines.append(f'{REQUEST_HISTOGRAM}_count{{{STATUS_LABEL}="{status}"}} {_value(sample)!r}')
    return "\n".join(lines) + "\n"

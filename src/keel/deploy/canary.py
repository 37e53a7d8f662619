"""Canary analysis: is the canary worse than the baseline, better said "not worse", or unknown?

Pure: it reads two scrapes of each version's Prometheus ``/metrics`` text (the
``http_server_request_duration_seconds`` histogram of
:mod:`keel.observe.metrics`, which also carries the status code) and compares
the traffic between them. Probes and ``/metrics`` itself (``slo="false"``) are
left out: they say nothing about what users get.

The verdict, as Kayenta gives it:

* **inconclusive** when either version served fewer than ``min_requests``
  requests in the interval — too little traffic is never a pass;
* **fail** when the canary's error rate (5xx) is above the absolute limit or
  above the baseline's by more than the allowed margin, when its p99 bucket is
  above the absolute latency limit, or when a one-sided Mann-Whitney U test
  finds it slower (``p < alpha``) by a meaningful effect;
* **pass** otherwise.

The Mann-Whitney U test runs on the histogram's buckets: every request in
one bucket is a tie with every other in it, so U counts canary-over-baseline
pairs across buckets plus half the pairs within one, and the normal
approximation uses the tie-corrected variance. The effect is U / (n₁·n₂), the
probability that a random canary request is slower than a random baseline one
(ties counted half); 0.5 means no difference. Requiring it above
``0.5 + min_effect`` keeps millions of requests from failing a canary for a
shift nobody would notice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families

from keel.errors import InvalidInput

REQUEST_HISTOGRAM = "http_server_request_duration_seconds"
STATUS_LABEL = "http_response_status_code"


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class MetricsUnreadable(InvalidInput):
    title = "Metrics text cannot be analysed"


@dataclass(frozen=True, slots=True)
class Traffic:
    """What one version served: request and 5xx counts, and its latency histogram.

    ``buckets`` are upper bounds (the last is ``inf``) and ``counts`` the
    requests in each bucket (not cumulative).
    """

    requests: int
    errors: int
    buckets: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_bound(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile (``0.0`` with no data)."""
        total = sum(self.counts)
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return self.buckets[-1]

    def since(self, earlier: Traffic) -> Traffic:
        """The traffic between the ``earlier`` scrape and this one (a restart resets to this)."""
        if earlier.requests == 0 and not any(earlier.counts):
            return self  # nothing served yet: the histogram had no series to show its buckets
        if earlier.buckets != self.buckets:
            raise MetricsUnreadable("the two scrapes have different histogram buckets")
        deltas = tuple(
            now - before for now, before in zip(self.counts, earlier.counts, strict=True)
        )
        if self.requests < earlier.requests or any(delta < 0 for delta in deltas):
            return self  # the process restarted: its counters began again
        return Traffic(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            buckets=self.buckets,
            counts=deltas,
        )


def read_traffic(text: str) -> Traffic:
    """Sum the request histogram of one ``/metrics`` text over every user-facing series."""
    cumulative: dict[float, float] = {}
    requests = errors = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != REQUEST_HISTOGRAM:
            continue
        for sample in family.samples:
            if sample.labels.get("slo") == "false":
                continue
            if sample.name == f"{REQUEST_HISTOGRAM}_bucket":
                bound = float(sample.labels["le"])
                cumulative[bound] = cumulative.get(bound, 0.0) + sample.value
            elif sample.name == f"{REQUEST_HISTOGRAM}_count":
                requests += sample.value
                if sample.labels.get(STATUS_LABEL, "").startswith("5"):
                    errors += sample.value
    if not cumulative:
        return Traffic(requests=0, errors=0, buckets=(math.inf,), counts=(0,))
    bounds = tuple(sorted(cumulative))
    if bounds[-1] != math.inf:
        raise MetricsUnreadable(f"{REQUEST_HISTOGRAM} has no +Inf bucket")
    running = [int(cumulative[bound]) for bound in bounds]
    counts = tuple(now - before for now, before in zip(running, [0, *running[:-1]], strict=True))
    return Traffic(requests=int(requests), errors=int(errors), buckets=bounds, counts=counts)


# --- Mann-Whitney U on binned samples ---------------------------------------


@dataclass(frozen=True, slots=True)
class MannWhitney:
    u: float  # pairs where the first sample is larger, ties counted half
    n1: int
    n2: int
    z: float
    p_greater: float  # one-sided: the first sample tends to be larger

    @property
    def effect(self) -> float:
        """P(first > second) + ½·P(tie): 0.5 means no difference."""
        return self.u / (self.n1 * self.n2) if self.n1 and self.n2 else 0.5


def u_statistic(first: Sequence[int], second: Sequence[int]) -> float:
    """U of ``first`` over ``second``, both given as counts per ordered bin."""
    if len(first) != len(second):
        raise MetricsUnreadable("both samples must use the same bins")
    below = 0  # second-sample observations in lower bins
    u = 0.0
    for mine, theirs in zip(first, second, strict=True):
        u += mine * (below + theirs / 2)
        below += theirs
    return u


def u_variance(first: Sequence[int], second: Sequence[int]) -> float:
    """Variance of U under "no difference", corrected for ties (each bin is one tie group)."""
    n1, n2 = sum(first), sum(second)
    n = n1 + n2
    if n < 2:
        return 0.0
    ties = sum((a + b) ** 3 - (a + b) for a, b in zip(first, second, strict=True))
    return n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))


def mann_whitney_greater(first: Sequence[int], second: Sequence[int]) -> MannWhitney:
    """One-sided test that ``first`` tends to be larger, normal approximation with continuity."""
    n1, n2 = sum(first), sum(second)
    u = u_statistic(first, second)
    variance = u_variance(first, second)
    if n1 == 0 or n2 == 0 or variance <= 0:
        return MannWhitney(u=u, n1=n1, n2=n2, z=0.0, p_greater=1.0)
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return MannWhitney(u=u, n1=n1, n2=n2, z=z, p_greater=0.5 * math.erfc(z / math.sqrt(2)))


# --- the verdict --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_requests: int = 100  # per version and interval; below it: inconclusive
    max_error_rate: float = 0.01  # the canary's 5xx share, absolute
    max_error_rate_increase: float = 0.005  # over the baseline's
    max_p99_seconds: float | None = None  # the canary's p99 bucket bound, absolute
    latency_alpha: float = 0.01  # significance of "the canary is slower"
    min_effect: float = 0.05  # and by at least this much over 0.5 (P(canary slower))


@dataclass(frozen=True, slots=True)
class Analysis:
    verdict: Verdict
    reasons: tuple[str, ...]
    canary: Traffic
    baseline: Traffic
    latency: MannWhitney | None = None
    details: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "canary": {"requests": self.canary.requests, "errors": self.canary.errors},
            "baseline": {"requests": self.baseline.requests, "errors": self.baseline.errors},
            **self.details,
        }


def analyse(canary: Traffic, baseline: Traffic, thresholds: Thresholds) -> Analysis:
    """Compare the canary's interval traffic with the baseline's."""
    short = [
        f"{name} served {traffic.requests} requests, fewer than {thresholds.min_requests}"
        for name, traffic in (("canary", canary), ("baseline", baseline))
        if traffic.requests < thresholds.min_requests
    ]
    if short:
        return Analysis(Verdict.INCONCLUSIVE, tuple(short), canary, baseline)
    reasons: list[str] = []
    if canary.error_rate > thresholds.max_error_rate:
        reasons.append(
            f"canary error rate {canary.error_rate:.2%} is above {thresholds.max_error_rate:.2%}"
        )
    if canary.error_rate - baseline.error_rate > thresholds.max_error_rate_increase:
        reasons.append(
            f"canary error rate {canary.error_rate:.2%} exceeds the baseline's "
            f"{baseline.error_rate:.2%} by more than {thresholds.max_error_rate_increase:.2%}"
        )
    p99 = canary.quantile_bound(0.99)
    if thresholds.max_p99_seconds is not None and p99 > thresholds.max_p99_seconds:
        reasons.append(f"canary p99 is up to {p99:g} s, above {thresholds.max_p99_seconds:g} s")
    if canary.buckets != baseline.buckets:
        raise MetricsUnreadable("canary and baseline use different histogram buckets")
    latency = mann_whitney_greater(canary.counts, baseline.counts)
    if (
        latency.p_greater < thresholds.latency_alpha
        and latency.effect > 0.5 + thresholds.min_effect
    ):
        reasons.append(
            f"canary is slower than the baseline (Mann-Whitney p={latency.p_greater:.2g}, "
            f"P(canary slower)={latency.effect:.2f})"
        )
    details = {
        "canary_error_rate": canary.error_rate,
        "baseline_error_rate": baseline.error_rate,
        "canary_p99_bound": p99,
        "baseline_p99_bound": baseline.quantile_bound(0.99),
        "latency_p_value": latency.p_greater,
        "latency_effect": latency.effect,
    }
    verdict = Verdict.FAIL if reasons else Verdict.PASS
    return Analysis(verdict, tuple(reasons), canary, baseline, latency, details)

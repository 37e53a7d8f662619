"""Noisy neighbours: organisations taking more than their share.

Per organisation, requests and server time are counted in fixed time buckets
over a sliding window (in this process; each process sees its own share of
the traffic, which is what it must protect). An organisation is flagged when

* its share of requests or of server time in the window exceeds the fair-share
  threshold (only once the window has enough traffic to judge), or
* its request rate in the newest bucket exceeds its own moving baseline by
  ``k`` standard deviations (Welford's running mean and variance over past
  buckets, so a steady heavy user is not flagged for being heavy).

While Keel is under pressure the limits middleware scales a flagged
organisation's limits down. Time is an argument throughout.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NoisyConfig:
    bucket_seconds: float = 10.0
    window_buckets: int = 30
    fair_share: float = 0.5
    min_window_requests: int = 200
    k_sigma: float = 4.0
    min_history: int = 6
    min_burst_requests: int = 50
    reduced_limit_factor: float = 0.5


@dataclass(slots=True)
class _Bucket:
    start: int
    requests: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Baseline:
    """Welford's online mean/variance of an org's per-bucket request count."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    @property
    def stddev(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


@dataclass(frozen=True, slots=True)
class Flag:
    org_id: str
    reason: str  # "request_share", "time_share" or "baseline"
    value: float
    threshold: float


class NoisyNeighbourDetector:
    def __init__(self, config: NoisyConfig | None = None) -> None:
        self.config = config or NoisyConfig()
        self._buckets: deque[_Bucket] = deque()
        self._baselines: dict[str, _Baseline] = {}
        self.flagged: dict[str, Flag] = {}

    def _bucket_index(self, now: float) -> int:
        return int(now // self.config.bucket_seconds)

    def _current(self, now: float) -> _Bucket:
        index = self._bucket_index(now)
        if self._buckets and index < self._buckets[-1].start:
            return self._buckets[-1]  # the clock went backwards: keep counting in the newest bucket
        if not self._buckets or self._buckets[-1].start != index:
            self._close_buckets_before(index)
            self._buckets.append(_Bucket(start=index))
        while self._buckets and self._buckets[0].start <= index - self.config.window_buckets:
            self._buckets.popleft()
        return self._buckets[-1]

    def _close_buckets_before(self, index: int) -> None:
        """Feed each finished bucket (and the empty ones skipped) into the baselines."""
        if not self._buckets:
            return
        last = self._buckets[-1]
        skipped = min(index - last.start - 1, self.config.window_buckets)
        for org_id, baseline in self._baselines.items():
            baseline.add(float(last.requests.get(org_id, 0)))
            for _ in range(max(0, skipped)):
                baseline.add(0.0)
        for org_id, count in last.requests.items():
            if org_id not in self._baselines:
                baseline = _Baseline()
                baseline.add(float(count))
                self._baselines[org_id] = baseline

    def record(self, org_id: str, duration_seconds: float, now: float) -> None:
        bucket = self._current(now)
        bucket.requests[org_id] = bucket.requests.get(org_id, 0) + 1
        bucket.seconds[org_id] = bucket.seconds.get(org_id, 0.0) + max(0.0, duration_seconds)

    def evaluate(self, now: float) -> tuple[list[Flag], list[str]]:
        """Re-judge every org; returns (newly flagged, newly cleared org ids)."""
        self._current(now)
        requests: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for bucket in self._buckets:
            for org_id, count in bucket.requests.items():
                requests[org_id] = requests.get(org_id, 0) + count
            for org_id, spent in bucket.seconds.items():
                seconds[org_id] = seconds.get(org_id, 0.0) + spent
        total_requests = sum(requests.values())
        total_seconds = sum(seconds.values())
        newest = self._buckets[-1].requests if self._buckets else {}
        judged: dict[str, Flag] = {}
        for org_id in requests:
            flag = self._judge(org_id, requests, seconds, total_requests, total_seconds, newest)
            if flag is not None:
                judged[org_id] = flag
        newly = [flag for org_id, flag in judged.items() if org_id not in self.flagged]
        cleared = [org_id for org_id in self.flagged if org_id not in judged]
        self.flagged = judged
        return newly, cleared

    def _judge(
        self,
        org_id: str,
        requests: dict[str, int],
        seconds: dict[str, float],
        total_requests: int,
        total_seconds: float,
        newest: dict[str, int],
    ) -> Flag | None:
        config = self.config
        if total_requests >= config.min_window_requests and len(requests) > 1:
            share = requests[org_id] / total_requests
            if share > config.fair_share:
                return Flag(org_id, "request_share", share, config.fair_share)
            if total_seconds > 0:
                time_share = seconds.get(org_id, 0.0) / total_seconds
                if time_share > config.fair_share:
                    return Flag(org_id, "time_share", time_share, config.fair_share)
        baseline = self._baselines.get(org_id)
        current = newest.get(org_id, 0)
        if baseline is not None and baseline.count >= config.min_history:
            limit = baseline.mean + config.k_sigma * max(baseline.stddev, 1.0)
            if current >= config.min_burst_requests and current > limit:
                return Flag(org_id, "baseline", float(current), limit)
        return None

    def limit_factor(self, org_id: str | None, under_pressure: bool) -> float:
        """How much of its limits an org gets now: reduced only if flagged AND under pressure."""
        if org_id is not None and under_pressure and org_id in self.flagged:
            return self.config.reduced_limit_factor
        return 1.0

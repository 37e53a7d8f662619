"""Noisy-neighbour flagging on synthetic traffic patterns (made-up times, no sleeping)."""

from __future__ import annotations

from keel.guard.noisy import NoisyConfig, NoisyNeighbourDetector

CONFIG = NoisyConfig(
    bucket_seconds=10,
    window_buckets=6,
    fair_share=0.5,
    min_window_requests=100,
    k_sigma=3.0,
    min_history=4,
    min_burst_requests=20,
)


def feed(
    detector: NoisyNeighbourDetector, start: float, seconds: int, per_second: dict[str, int]
) -> float:
    now = start
    for _ in range(seconds):
        for org_id, count in per_second.items():
            for _ in range(count):
                detector.record(org_id, 0.01, now)
        now += 1
    return now


def test_fair_traffic_flags_nobody() -> None:
    detector = NoisyNeighbourDetector(CONFIG)
    now = feed(detector, 0, 60, {"a": 3, "b": 3, "c": 3})
    assert detector.evaluate(now) == ([], [])


def test_an_org_taking_most_of_the_requests_is_flagged_then_cleared() -> None:
    detector = NoisyNeighbourDetector(CONFIG)
    now = feed(detector, 0, 60, {"hog": 20, "b": 2, "c": 2})
    newly, _ = detector.evaluate(now)
    assert [(f.org_id, f.reason) for f in newly] == [("hog", "request_share")]
    assert detector.limit_factor("hog", under_pressure=True) == CONFIG.reduced_limit_factor
    assert detector.limit_factor("hog", under_pressure=False) == 1.0
    assert detector.limit_factor("b", under_pressure=True) == 1.0
    now = feed(detector, now, 70, {"hog": 2, "b": 2, "c": 2})
    newly, cleared = detector.evaluate(now)
    assert newly == []
    assert cleared == ["hog"]


def test_server_time_share_is_judged_too() -> None:
    detector = NoisyNeighbourDetector(CONFIG)
    now = 0.0
    for _ in range(60):
        for org_id in ("slow", "b", "c"):
            detector.record(org_id, 2.0 if org_id == "slow" else 0.01, now)
            detector.record(org_id, 2.0 if org_id == "slow" else 0.01, now)
        now += 1
    newly, _ = detector.evaluate(now)
    assert [(f.org_id, f.reason) for f in newly] == [("slow", "time_share")]


def test_a_sudden_burst_above_its_own_baseline_is_flagged_but_steady_heavy_use_is_not() -> None:
    config = NoisyConfig(
        bucket_seconds=10,
        window_buckets=6,
        fair_share=0.99,
        min_window_requests=10**9,
        k_sigma=3.0,
        min_history=4,
        min_burst_requests=20,
    )
    detector = NoisyNeighbourDetector(config)
    now = feed(detector, 0, 80, {"steady": 10, "spiky": 1})
    assert detector.evaluate(now) == ([], [])
    now = feed(detector, now, 5, {"steady": 10, "spiky": 30})
    newly, _ = detector.evaluate(now)
    assert [(f.org_id, f.reason) for f in newly] == [("spiky", "baseline")]


def test_a_clock_jumping_backwards_does_not_crash_or_lose_counts() -> None:
    detector = NoisyNeighbourDetector(CONFIG)
    detector.record("a", 0.1, 1000)
    detector.record("a", 0.1, 10)
    detector.evaluate(5)
    assert detector.flagged == {}

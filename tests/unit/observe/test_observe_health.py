"""The health registry: statuses, timeouts, caching and the IETF draft's shape."""

from __future__ import annotations

import asyncio

import pytest

from keel.keyed_hash import keyed_hash
from keel.observe.health import (
    HealthCheck,
    HealthRegistry,
    Observation,
    Status,
    worst,
)
from keel.observe.identity import LOG_HASH_LENGTH, identity_key
from keel.observe.metrics import duration_buckets
from keel.testing import ManualClock


def registry(clock: ManualClock | None = None, cache: float = 2.0) -> HealthRegistry:
    return HealthRegistry(clock=clock or ManualClock(), cache_seconds=cache, default_timeout=1.0)


def counting_probe(calls: list[int], observation: Observation | None = None) -> HealthCheck:
    async def probe() -> Observation | None:
        calls.append(1)
        return observation

    return HealthCheck("database", "datastore", "responseTime", probe)


async def test_a_passing_check_reports_its_response_time_and_no_output() -> None:
    health = registry()
    health.register(counting_probe([]))
    report = await health.readiness()
    assert report.status is Status.PASS
    [entry] = report.checks_json()["database:responseTime"]
    assert entry["componentType"] == "datastore"
    assert entry["observedUnit"] == "ms"
    assert isinstance(entry["observedValue"], float)
    assert entry["status"] == "pass"
    assert entry["time"] == "2026-01-01T00:00:00Z"
    assert "output" not in entry


async def test_a_critical_failure_fails_and_says_why() -> None:
    async def broken() -> Observation | None:
        raise OSError("disk gone")

    health = registry()
    health.register(HealthCheck("storage", "datastore", "responseTime", broken))
    report = await health.readiness()
    assert report.status is Status.FAIL
    [entry] = report.checks_json()["storage:responseTime"]
    assert entry["status"] == "fail"
    assert entry["output"] == "OSError"


async def test_an_optional_dependency_failing_only_warns() -> None:
    async def broken() -> Observation | None:
        raise ConnectionError("refused")

    health = registry()
    health.register(counting_probe([]))
    health.register(HealthCheck("redis", "datastore", "responseTime", broken, critical=False))
    report = await health.readiness()
    assert report.status is Status.WARN
    assert report.checks_json()["redis:responseTime"][0]["status"] == "warn"


async def test_a_slow_check_times_out_on_its_own_timeout() -> None:
    never = asyncio.Event()

    async def hangs() -> Observation | None:
        await never.wait()
        return None

    health = registry()
    health.register(counting_probe([]))
    health.register(HealthCheck("slow", "component", "responseTime", hangs, timeout=0.05))
    report = await health.readiness()
    assert report.status is Status.FAIL
    [entry] = report.checks_json()["slow:responseTime"]
    assert entry["output"] == "timed out after 0.05s"
    assert report.checks_json()["database:responseTime"][0]["status"] == "pass"


async def test_readings_are_cached_for_the_interval_then_refreshed() -> None:
    clock = ManualClock()
    calls: list[int] = []
    health = registry(clock, cache=2.0)
    health.register(counting_probe(calls))
    await health.readiness()
    clock.advance(1.9)
    await health.readiness()
    assert len(calls) == 1
    clock.advance(0.1)
    await health.readiness()
    assert len(calls) == 2


async def test_a_storm_of_concurrent_probes_runs_each_check_once() -> None:
    calls: list[int] = []
    health = registry()
    health.register(counting_probe(calls))
    await asyncio.gather(*(health.readiness() for _ in range(50)))
    assert len(calls) == 1


async def test_verbose_text_uses_kubernetes_markers() -> None:
    async def broken() -> Observation | None:
        return Observation(status=Status.FAIL, output="schema behind")

    health = registry()
    health.register(counting_probe([]))
    health.register(HealthCheck("schema", "datastore", "revision", broken))
    text = (await health.readiness()).verbose_text("readyz")
    assert text.splitlines() == [
        "[+]database ok",
        "[-]schema failed: schema behind",
        "readyz check failed",
    ]


async def test_exclude_drops_the_named_check_from_the_verdict() -> None:
    async def broken() -> Observation | None:
        raise OSError

    health = registry()
    health.register(counting_probe([]))
    health.register(HealthCheck("storage", "datastore", "responseTime", broken))
    report = await health.readiness()
    assert report.status is Status.FAIL
    assert report.without(["storage"]).status is Status.PASS


def test_worst_orders_fail_over_warn_over_pass() -> None:
    assert worst([Status.PASS, Status.WARN]) is Status.WARN
    assert worst([Status.WARN, Status.FAIL, Status.PASS]) is Status.FAIL
    assert worst([]) is Status.PASS


def test_registering_one_name_twice_is_refused() -> None:
    health = registry()
    health.register(counting_probe([]))
    with pytest.raises(ValueError, match="already registered"):
        health.register(counting_probe([]))


def test_buckets_contain_the_slo_threshold_exactly_and_stay_sorted() -> None:
    for threshold in (0.3, 0.25, 0.123, 12.0):
        buckets = duration_buckets(threshold)
        assert threshold in buckets
        assert list(buckets) == sorted(set(buckets))


def test_keyed_hashes_are_stable_keyed_and_not_the_input() -> None:
    key = identity_key(b"secret-one")
    other = identity_key(b"secret-two")
    short = LOG_HASH_LENGTH
    assert keyed_hash(key, "user-1", length=short) == keyed_hash(key, "user-1", length=short)
    assert keyed_hash(key, "user-1", length=short) != keyed_hash(other, "user-1", length=short)
    assert "user-1" not in keyed_hash(key, "user-1")
    assert len(keyed_hash(key, "user-1", length=short)) == 16
    assert keyed_hash(key, "user-1") != keyed_hash(b"secret-one", "user-1")  # purpose-bound

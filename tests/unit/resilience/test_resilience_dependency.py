"""Retries, retry budget, bulkhead, timeout, and their composition in a Dependency."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from keel.errors import DependencyUnavailable, NotFound
from keel.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    Bulkhead,
    BulkheadConfig,
    BulkheadFull,
    Dependencies,
    Dependency,
    DependencyConfig,
    DependencyFailed,
    DependencyTimeout,
    ResilienceMetrics,
    RetryBudget,
    RetryConfig,
    RetryPolicy,
    TransitionReason,
    set_testing,
)
from keel.testing import ManualClock


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after = retry_after


class SleepRecorder:
    """tenacity's ``sleep``: records the delay and moves the manual clock instead."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)


class Script:
    """An attempt function failing with the given errors, then answering ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts = 0

    async def __call__(self) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sleep(clock: ManualClock) -> SleepRecorder:
    return SleepRecorder(clock)


def policy(clock: ManualClock, sleep: SleepRecorder, **overrides: object) -> RetryPolicy:
    config = RetryConfig.model_validate(
        {"max_attempts": 4, "initial_backoff": 0.5, "max_backoff": 4.0, **overrides}
    )
    return RetryPolicy(config, clock=clock, sleep=sleep)


# --- retry -------------------------------------------------------------------------


async def test_retry_after_hint_replaces_the_backoff(
    clock: ManualClock, sleep: SleepRecorder
) -> None:
    attempt = Script(Flaky(retry_after=2.5), Flaky(retry_after=7))
    assert await policy(clock, sleep).run(attempt, idempotent=True) == "ok"
    assert sleep.slept == [2.5, 7.0]
    assert attempt.attempts == 3


async def test_backoff_is_full_jitter_capped_exponential(
    clock: ManualClock, sleep: SleepRecorder
) -> None:
    attempt = Script(*(Flaky() for _ in range(5)))
    retry = policy(clock, sleep, max_attempts=6, max_total_seconds=1000, budget_max_tokens=10)
    assert await retry.run(attempt, idempotent=True) == "ok"
    caps = [0.5, 1.0, 2.0, 4.0, 4.0]
    assert len(sleep.slept) == 5
    assert all(0 <= s <= cap for s, cap in zip(sleep.slept, caps, strict=True))


async def test_a_non_idempotent_call_is_tried_once(
    clock: ManualClock, sleep: SleepRecorder
) -> None:
    error = Flaky(retry_after=0)
    attempt = Script(error)
    with pytest.raises(Flaky) as raised:
        await policy(clock, sleep).run(attempt, idempotent=False)
    assert raised.value is error
    assert attempt.attempts == 1


async def test_attempts_are_capped_and_the_last_error_is_raised(
    clock: ManualClock, sleep: SleepRecorder
) -> None:
    errors = [Flaky(retry_after=0) for _ in range(10)]
    attempt = Script(*errors)
    with pytest.raises(Flaky) as raised:
        await policy(clock, sleep, max_attempts=3).run(attempt, idempotent=True)
    assert attempt.attempts == 3
    assert raised.value is errors[2]


@pytest.mark.parametrize(
    ("hints", "max_total", "attempts"),
    [
        ([1.0, 1.0, 1.0], 10.0, 4),  # fits
        ([4.0, 4.0, 4.0], 10.0, 3),  # the third wait would end at 12 s > 10 s
        ([11.0], 10.0, 1),  # a hint past the total is never waited for
    ],
)
async def test_total_time_bounds_the_retries(
    clock: ManualClock,
    sleep: SleepRecorder,
    hints: list[float],
    max_total: float,
    attempts: int,
) -> None:
    attempt = Script(*(Flaky(retry_after=h) for h in hints))
    retry = policy(clock, sleep, max_total_seconds=max_total, max_retry_after=60)
    if attempts == len(hints) + 1:
        assert await retry.run(attempt, idempotent=True) == "ok"
    else:
        with pytest.raises(Flaky):
            await retry.run(attempt, idempotent=True)
    assert attempt.attempts == attempts


async def test_a_hint_longer_than_max_retry_after_ends_the_retries(
    clock: ManualClock, sleep: SleepRecorder
) -> None:
    attempt = Script(Flaky(retry_after=31))
    with pytest.raises(Flaky):
        await policy(clock, sleep, max_retry_after=30, max_total_seconds=100).run(
            attempt, idempotent=True
        )
    assert attempt.attempts == 1


@pytest.mark.parametrize("error", [BreakerOpen("d", "open", retry_after=1), BulkheadFull()])
async def test_keel_rejections_are_never_retried(
    clock: ManualClock, sleep: SleepRecorder, error: Exception
) -> None:
    attempt = Script(error)
    with pytest.raises(type(error)):
        await policy(clock, sleep).run(attempt, idempotent=True)
    assert attempt.attempts == 1


async def test_set_testing_removes_every_delay(clock: ManualClock, sleep: SleepRecorder) -> None:
    set_testing(True)
    try:
        attempt = Script(Flaky(retry_after=5), Flaky())
        assert await policy(clock, sleep).run(attempt, idempotent=True) == "ok"
    finally:
        set_testing(False)
    assert sleep.slept == [0.0, 0.0]


# --- retry budget --------------------------------------------------------------------


def test_budget_allows_retries_for_a_share_of_calls(clock: ManualClock) -> None:
    budget = RetryBudget(0.2, min_per_second=0.0, max_tokens=10.0, clock=clock)
    assert budget.tokens() == 10.0  # starts full
    for _ in range(10):
        assert budget.try_spend()
    assert not budget.try_spend()
    for _ in range(4):
        budget.deposit()
    assert not budget.try_spend()  # 0.8 of a token
    budget.deposit()
    assert budget.try_spend()  # five calls bought one retry: 20 %
    assert not budget.try_spend()


def test_budget_refills_slowly_with_time_up_to_its_cap(clock: ManualClock) -> None:
    budget = RetryBudget(0.2, min_per_second=0.5, max_tokens=3.0, clock=clock)
    while budget.try_spend():
        pass
    clock.advance(1.0)
    assert not budget.try_spend()  # half a token
    clock.advance(1.0)
    assert budget.try_spend()
    clock.advance(3600)
    assert budget.tokens() == 3.0


async def test_an_exhausted_budget_raises_the_original_error(
    clock: ManualClock, sleep: SleepRecorder
) -> None:
    config = RetryConfig(
        max_attempts=5, budget_ratio=0.2, budget_min_per_second=0, budget_max_tokens=1
    )
    retry = RetryPolicy(config, clock=clock, sleep=sleep)
    first = Script(Flaky(retry_after=0))
    assert await retry.run(first, idempotent=True) == "ok"  # spends the only token
    error = Flaky(retry_after=0)
    second = Script(error, Flaky())
    with pytest.raises(Flaky) as raised:
        await retry.run(second, idempotent=True)
    assert raised.value is error
    assert second.attempts == 1


# --- bulkhead --------------------------------------------------------------------------


@pytest.fixture
def metrics() -> ResilienceMetrics:
    return ResilienceMetrics(CollectorRegistry())


async def test_a_full_bulkhead_rejects_at_once_with_retry_after(
    metrics: ResilienceMetrics,
) -> None:
    bulkhead = Bulkhead(
        "storage",
        BulkheadConfig(max_concurrent_calls=2, max_wait_seconds=0, retry_after=3),
        metrics=metrics,
    )
    await bulkhead.acquire()
    await bulkhead.acquire()
    with pytest.raises(BulkheadFull) as raised:
        await bulkhead.acquire()
    assert isinstance(raised.value, DependencyUnavailable)
    assert raised.value.retry_after == 3
    assert raised.value.headers["Retry-After"] == "3"
    sample = metrics.registry.get_sample_value
    assert sample("keel_bulkhead_in_use", {"dependency": "storage"}) == 2.0
    assert sample("keel_bulkhead_rejected_total", {"dependency": "storage"}) == 1.0
    bulkhead.release()
    await bulkhead.acquire()  # a slot came back
    assert bulkhead.in_use == 2


async def test_a_waiting_caller_gets_a_slot_released_within_the_wait(
    metrics: ResilienceMetrics,
) -> None:
    bulkhead = Bulkhead(
        "storage", BulkheadConfig(max_concurrent_calls=1, max_wait_seconds=60), metrics=metrics
    )
    await bulkhead.acquire()
    async with asyncio.timeout(5):
        waiter = asyncio.create_task(bulkhead.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        bulkhead.release()
        await waiter
    assert bulkhead.in_use == 1


# --- the composition -----------------------------------------------------------------


def dependency(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics, **overrides: object
) -> Dependency:
    config = DependencyConfig.model_validate(
        {
            "name": "storage",
            "timeout_seconds": 5.0,
            "failure_retry_after": 2,
            "breaker": BreakerConfig(
                window_size=4, minimum_number_of_calls=4, wait_duration_in_open_state=30
            ),
            "retry": RetryConfig(max_attempts=3),
            **overrides,
        }
    )
    return Dependency(config, clock=clock, sleep=sleep, metrics=metrics)


def samples(metrics: ResilienceMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"dependency": "storage", **labels})


async def test_a_flaky_idempotent_call_is_retried_and_counted(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics
) -> None:
    dep = dependency(clock, sleep, metrics)
    attempt = Script(Flaky(retry_after=1))
    assert await dep.call(attempt, idempotent=True) == "ok"
    assert sleep.slept == [1.0]
    assert samples(metrics, "keel_dependency_calls_total", outcome="success") == 1.0
    assert samples(metrics, "keel_dependency_retries_total") == 1.0
    assert samples(metrics, "keel_dependency_call_duration_seconds_count") == 1.0
    assert dep.breaker.stats().calls["failure"] == 1  # the breaker saw each attempt


async def test_a_failure_surfaces_as_dependency_failed_with_its_cause(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics
) -> None:
    dep = dependency(clock, sleep, metrics)
    original = Flaky()
    with pytest.raises(DependencyFailed) as raised:
        await dep.call(Script(original))  # not idempotent: one attempt
    assert raised.value.__cause__ is original
    assert raised.value.retry_after == 2
    assert raised.value.status == 503
    assert samples(metrics, "keel_dependency_calls_total", outcome="failure") == 1.0


async def test_the_callers_own_errors_pass_through_untouched(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics
) -> None:
    dep = dependency(
        clock,
        sleep,
        metrics,
        breaker=BreakerConfig(ignore_exceptions=(NotFound,)),
    )
    error = NotFound("no such blob")
    with pytest.raises(NotFound) as raised:
        await dep.call(Script(error), idempotent=True, fallback=lambda e: "fallback")
    assert raised.value is error
    assert samples(metrics, "keel_dependency_calls_total", outcome="client_error") == 1.0


async def test_an_open_breaker_fails_fast_into_the_fallback(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics
) -> None:
    dep = dependency(clock, sleep, metrics)
    for _ in range(4):
        with pytest.raises(DependencyFailed):
            await dep.call(Script(Flaky()))
    assert dep.breaker.state is BreakerState.OPEN
    attempt = Script()
    seen: list[DependencyUnavailable] = []

    async def fallback(error: DependencyUnavailable) -> str:
        seen.append(error)
        return "cached"

    assert await dep.call(attempt, idempotent=True, fallback=fallback) == "cached"
    assert attempt.attempts == 0
    assert isinstance(seen[0], BreakerOpen)
    assert seen[0].retry_after == 30
    assert samples(metrics, "keel_dependency_rejections_total", reason="breaker_open") == 1.0
    assert samples(metrics, "keel_dependency_fallbacks_total") == 1.0
    with pytest.raises(BreakerOpen):
        await dep.call(attempt)


async def test_a_hung_attempt_times_out_and_counts_against_the_breaker(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics
) -> None:
    dep = dependency(clock, sleep, metrics, timeout_seconds=0.001)
    never = asyncio.Event()

    async def hang() -> str:
        await never.wait()
        return "never"

    async with asyncio.timeout(5):
        with pytest.raises(DependencyTimeout) as raised:
            await dep.call(hang)
    assert raised.value.retry_after == 2
    assert dep.breaker.stats().calls["failure"] == 1
    assert dep.bulkhead.in_use == 0
    assert samples(metrics, "keel_dependency_calls_total", outcome="timeout") == 1.0


async def test_a_full_bulkhead_is_not_the_dependencys_fault(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics
) -> None:
    dep = dependency(
        clock, sleep, metrics, bulkhead=BulkheadConfig(max_concurrent_calls=1, max_wait_seconds=0)
    )
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "held"

    async with asyncio.timeout(5):
        first = asyncio.create_task(dep.call(held))
        await asyncio.sleep(0)
        for _ in range(5):
            with pytest.raises(BulkheadFull):
                await dep.call(held, idempotent=True)
        release.set()
        assert await first == "held"
    assert dep.breaker.state is BreakerState.CLOSED
    assert dep.breaker.stats().calls["ignored"] == 5
    assert samples(metrics, "keel_dependency_rejections_total", reason="bulkhead_full") == 5.0


async def test_protect_keeps_the_signature_and_applies_the_policy(
    clock: ManualClock, sleep: SleepRecorder, metrics: ResilienceMetrics
) -> None:
    dep = dependency(clock, sleep, metrics)
    calls = 0

    @dep.protect(idempotent=True)
    async def read(key: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Flaky(retry_after=0)
        return key.upper()

    assert await read("blob") == "BLOB"
    assert calls == 2


def test_dependencies_are_reached_by_attribute_and_registered(
    clock: ManualClock, metrics: ResilienceMetrics
) -> None:
    deps = Dependencies(
        [DependencyConfig(name="storage"), DependencyConfig(name="webhooks")],
        clock=clock,
        metrics=metrics,
    )
    assert deps.storage is deps["storage"]
    assert "webhooks" in deps
    assert deps.registry.get("webhooks") is deps.webhooks.breaker
    with pytest.raises(AttributeError):
        _ = deps.nothing
    with pytest.raises(ValueError, match="twice"):
        Dependencies([DependencyConfig(name="a"), DependencyConfig(name="a")], metrics=metrics)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="initial_backoff"):
        RetryConfig(initial_backoff=5, max_backoff=1)
    with pytest.raises(ValueError, match="name"):
        DependencyConfig(name="Not A Name")


@pytest.fixture(autouse=True)
def _no_testing_switch_leaks() -> Iterator[None]:
    yield
    set_testing(False)


def test_reason_enum_is_stable() -> None:
    # Published in the shared store: renaming a value breaks mixed-version fleets.
    assert TransitionReason.REMOTE.value == "remote"

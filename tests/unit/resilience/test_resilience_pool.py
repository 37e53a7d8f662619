"""DependencyPool: one dependency per key (a webhook host), lazily made, bounded."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from keel.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerRegistry,
    BreakerState,
    DependencyConfig,
    DependencyPool,
    MemoryBreakerStateStore,
    ResilienceMetrics,
    RetryConfig,
    member_name,
)
from keel.resilience.wiring import build_webhooks, webhook_template
from keel.settings import Settings
from keel.testing import ManualClock

TEMPLATE = DependencyConfig(
    name="webhooks",
    breaker=BreakerConfig(window_size=2, minimum_number_of_calls=2, wait_duration_in_open_state=30),
    retry=RetryConfig(max_attempts=1),
)


def pool(
    clock: ManualClock, *, max_members: int = 3, idle_seconds: float = 600.0
) -> tuple[DependencyPool, BreakerRegistry, ResilienceMetrics]:
    metrics = ResilienceMetrics(CollectorRegistry())
    registry = BreakerRegistry(clock=clock, metrics=metrics)
    made = DependencyPool(
        TEMPLATE,
        max_members=max_members,
        idle_seconds=idle_seconds,
        clock=clock,
        metrics=metrics,
        registry=registry,
    )
    return made, registry, metrics


async def fail() -> None:
    raise OSError("connection refused")


async def succeed() -> str:
    return "ok"


def test_a_member_is_made_on_first_use_and_reused_after() -> None:
    members, registry, _ = pool(ManualClock())
    first = members.get("hooks.a.test")
    assert members.get("hooks.a.test") is first
    assert first.name == "webhooks.hooks.a.test"
    assert first.config.timeout_seconds == TEMPLATE.timeout_seconds
    assert registry.get("webhooks.hooks.a.test") is first.breaker


async def test_one_hosts_failures_open_its_breaker_only() -> None:
    members, _, _ = pool(ManualClock())
    dead, healthy = members.get("dead.test"), members.get("alive.test")
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017, PT011 - the failure itself is not the point
            await dead.call(fail)
    assert dead.breaker.state is BreakerState.OPEN
    with pytest.raises(BreakerOpen):
        await dead.call(succeed)
    assert await healthy.call(succeed) == "ok"
    assert healthy.breaker.state is BreakerState.CLOSED


def test_least_recently_used_member_is_evicted_beyond_the_bound() -> None:
    members, registry, _ = pool(ManualClock(), max_members=2)
    a = members.get("a.test")
    members.get("b.test")
    members.get("a.test")  # a is now the most recent
    members.get("c.test")
    assert members.keys() == ["a.test", "c.test"]
    assert members.get("a.test") is a
    assert registry.get("webhooks.b.test") is None
    assert members.evictions == 1


def test_members_idle_too_long_are_dropped_on_the_next_lookup() -> None:
    clock = ManualClock()
    members, registry, _ = pool(clock, idle_seconds=60)
    members.get("old.test")
    clock.advance(30)
    members.get("recent.test")
    clock.advance(31)  # old: idle 61 s; recent: 31 s
    members.get("new.test")
    assert members.keys() == ["recent.test", "new.test"]
    assert registry.get("webhooks.old.test") is None


@given(st.lists(st.text(min_size=1, max_size=80), max_size=60))
def test_the_pool_never_holds_more_than_its_bound(keys: list[str]) -> None:
    members, registry, _ = pool(ManualClock(), max_members=5)
    for key in keys:
        members.get(key)
        assert len(members) <= 5
        assert len(list(registry)) <= 5


async def test_an_evicted_open_breaker_is_open_again_when_its_host_returns() -> None:
    """The record stays in the shared store, and the new breaker adopts it."""
    clock = ManualClock()
    store = MemoryBreakerStateStore()
    members = DependencyPool(
        TEMPLATE,
        max_members=1,
        clock=clock,
        store=store,
        metrics=ResilienceMetrics(CollectorRegistry()),
    )
    dead = members.get("dead.test")
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017, PT011
            await dead.call(fail)
    assert dead.breaker.state is BreakerState.OPEN
    members.get("other.test")  # evicts dead.test
    clock.advance(1)
    with pytest.raises(BreakerOpen):
        await members.get("dead.test").call(succeed)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("hooks.example.com", "webhooks.hooks.example.com"),
        ("127.0.0.1:8443", "webhooks.127.0.0.1_8443"),
        ("Hooks.Example.COM", "webhooks.hooks.example.com_hd2bf783995cf4b27"),
        ("[fe80::1]:9000", "webhooks.fe80-1-9000_hb4e15ad7a9430096"),
    ],
)
def test_member_names_are_safe_breaker_names(key: str, name: str) -> None:
    assert member_name("webhooks", key) == name


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300))
def test_member_names_always_validate_and_never_collide(key: str, other: str) -> None:
    name = member_name("webhooks", key)
    DependencyConfig(name=name)  # raises if the name breaks the pattern or the length
    if key != other:
        assert member_name("webhooks", other) != name


@pytest.mark.parametrize(
    ("key", "other"),
    [("a.test:8080", "a.test-8080"), ("A.test", "a.test"), ("x" * 80, "x" * 81)],
)
def test_keys_that_look_alike_get_breakers_of_their_own(key: str, other: str) -> None:
    assert member_name("webhooks", key) != member_name("webhooks", other)


async def test_metrics_carry_the_template_label_and_live_members_breakers() -> None:
    clock = ManualClock()
    members, _, metrics = pool(clock, max_members=1)
    await members.get("a.test").call(succeed)
    members.get("b.test")  # evicts a.test
    await members.get("b.test").call(succeed)
    gc.collect()  # a member holds reference cycles; the scrape reads live ones only
    text = generate_latest(metrics.registry).decode()
    assert 'keel_dependency_calls_total{dependency="webhooks",outcome="success"} 2.0' in text
    assert 'breaker="webhooks.b.test"' in text
    assert "a.test" not in text  # evicted: its series left with it


def test_the_webhook_template_comes_from_settings() -> None:
    settings = Settings(
        webhooks_timeout_seconds=4.0,
        webhooks_retry_attempts=2,
        webhooks_max_concurrent_calls=3,
        webhooks_max_hosts=7,
        webhooks_idle_seconds=90.0,
    )
    template = webhook_template(settings)
    assert (template.name, template.timeout_seconds) == ("webhooks", 4.0)
    assert template.retry.max_attempts == 2
    assert template.retry.max_total_seconds == 4.0
    assert template.bulkhead.max_concurrent_calls == 3
    assert template.bulkhead.max_wait_seconds == 0.0
    built = build_webhooks(settings, metrics=ResilienceMetrics(CollectorRegistry()))
    assert (built.max_members, built.idle_seconds) == (7, 90.0)

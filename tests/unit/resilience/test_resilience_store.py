"""Shared breaker state through the memory store, and the operator's functions.

The same scenarios run against Redis in tests/integration/resilience.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from keel.errors import ConfigurationError, NotFound
from keel.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    MemoryBreakerStateStore,
    ResilienceMetrics,
    StateStoreUnavailable,
    TransitionReason,
    force_closed_breaker,
    force_open_breaker,
    list_breakers,
    reset_breaker,
    store_from_url,
)
from keel.resilience._store import BreakerRecord
from keel.testing import ManualClock

CONFIG = BreakerConfig(
    window_size=4,
    minimum_number_of_calls=4,
    wait_duration_in_open_state=30,
    permitted_number_of_calls_in_half_open_state=1,
    sync_interval=1.0,
)


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise Boom


def breaker(clock: ManualClock, store: object) -> CircuitBreaker:
    return CircuitBreaker(
        "storage",
        CONFIG,
        clock=clock,
        store=store,  # type: ignore[arg-type]
        metrics=ResilienceMetrics(CollectorRegistry()),
    )


async def trip(b: CircuitBreaker) -> None:
    for _ in range(4):
        with pytest.raises(Boom):
            await b.call(boom)
    assert b.state is BreakerState.OPEN


async def test_a_breaker_opened_by_one_process_is_obeyed_by_another_within_the_interval() -> None:
    store = MemoryBreakerStateStore()
    clock_a, clock_b = ManualClock(), ManualClock()
    a, b = breaker(clock_a, store), breaker(clock_b, store)
    assert await b.call(ok) == "ok"  # b has synced: its cache is fresh for 1 s
    clock_a.advance(0.1)
    clock_b.advance(0.1)
    await trip(a)
    assert await b.call(ok) == "ok"  # still within b's cache interval
    clock_b.advance(1.0)
    with pytest.raises(BreakerOpen) as rejected:
        await b.call(ok)
    assert b.state is BreakerState.OPEN
    assert rejected.value.retry_after == 29  # b waits from a's opening, 1 s ago
    clock_a.advance(29.9)
    clock_b.advance(28.9)
    with pytest.raises(BreakerOpen):
        await b.call(ok)
    clock_b.advance(0.1)
    assert await b.call(ok) == "ok"  # b's wait is over: its own probe closes it
    assert b.state is BreakerState.CLOSED
    clock_a.advance(1.0)
    assert await a.call(ok) == "ok"  # a adopts b's newer CLOSED record
    assert a.state is BreakerState.CLOSED


async def test_no_store_call_per_protected_call() -> None:
    class CountingStore(MemoryBreakerStateStore):
        reads = 0

        async def read(self, name: str) -> BreakerRecord | None:
            self.reads += 1
            return await super().read(name)

    store = CountingStore()
    clock = ManualClock()
    b = breaker(clock, store)
    for _ in range(100):
        await b.call(ok)
        clock.advance(0.05)  # 5 s in all
    assert store.reads == 5


async def test_a_failing_store_never_breaks_the_breaker() -> None:
    class DeadStore(MemoryBreakerStateStore):
        async def read(self, name: str) -> BreakerRecord | None:
            raise StateStoreUnavailable("down")

        async def publish(self, record: BreakerRecord) -> bool:
            raise StateStoreUnavailable("down")

    clock = ManualClock()
    b = breaker(clock, DeadStore())
    await trip(b)  # the first call already found the store dead
    clock.advance(30)
    assert await b.call(ok) == "ok"
    assert b.state is BreakerState.CLOSED


async def test_a_transition_unpublished_during_an_outage_is_published_after_it() -> None:
    class FlakyStore(MemoryBreakerStateStore):
        down = True

        async def publish(self, record: BreakerRecord) -> bool:
            if self.down:
                raise StateStoreUnavailable("down")
            return await super().publish(record)

    store = FlakyStore()
    clock = ManualClock()
    b = breaker(clock, store)
    await trip(b)
    assert await store.read("storage") is None
    store.down = False
    clock.advance(1.0)
    with pytest.raises(BreakerOpen):
        await b.call(ok)
    record = await store.read("storage")
    assert record is not None
    assert record.state is BreakerState.OPEN


async def test_the_cli_functions_reach_servers_through_the_store() -> None:
    store = MemoryBreakerStateStore()
    server_clock, cli_clock = ManualClock(), ManualClock()
    server = breaker(server_clock, store)
    await server.call(ok)  # registers the name in the store
    with pytest.raises(NotFound):
        await force_open_breaker(store, "storgae", clock=cli_clock)  # a typo

    cli_clock.advance(1)
    record = await force_open_breaker(store, "storage", clock=cli_clock)
    assert record.state is BreakerState.FORCED_OPEN
    assert [r.state for r in await list_breakers(store)] == [BreakerState.FORCED_OPEN]
    server_clock.advance(1.0)
    with pytest.raises(BreakerOpen):
        await server.call(ok)
    assert server.state is BreakerState.FORCED_OPEN

    cli_clock.advance(1)
    await force_closed_breaker(store, "storage", clock=cli_clock)
    server_clock.advance(1.0)
    assert await server.call(ok) == "ok"
    assert server.state is BreakerState.CLOSED

    for _ in range(3):
        with pytest.raises(Boom):
            await server.call(boom)
    cli_clock.advance(1)
    await reset_breaker(store, "storage", clock=cli_clock)
    server_clock.advance(1.0)
    with pytest.raises(Boom):
        await server.call(boom)  # the window was cleared: 1 failure, not 4
    assert server.state is BreakerState.CLOSED
    assert server.snapshot().calls == 1


async def test_the_registry_acts_on_local_breakers_and_lists_the_store() -> None:
    store = MemoryBreakerStateStore()
    clock = ManualClock(start=ManualClock().now() + timedelta(days=1))
    registry = BreakerRegistry(
        store=store, clock=clock, metrics=ResilienceMetrics(CollectorRegistry())
    )
    events: list[object] = []
    registry.add_listener(events.append)
    local = registry.breaker("storage", CONFIG)
    assert registry.breaker("storage") is local
    await store.publish(
        BreakerRecord(
            "webhooks",
            BreakerState.OPEN,
            clock.now(),
            TransitionReason.FAILURE_RATE_EXCEEDED,
            "elsewhere",
        )
    )

    status = await registry.force_open("storage")
    assert status.state is BreakerState.FORCED_OPEN
    assert local.state is BreakerState.FORCED_OPEN
    record = await store.read("storage")
    assert record is not None
    assert record.state is BreakerState.FORCED_OPEN  # published before answering
    assert len(events) == 1

    listed = {s.name: s.state for s in await registry.list()}
    assert listed == {"storage": BreakerState.FORCED_OPEN, "webhooks": BreakerState.OPEN}
    await registry.reset("storage")
    assert local.state is BreakerState.CLOSED
    status = await registry.force_closed("webhooks")  # not local: through the store
    assert status.state is BreakerState.CLOSED
    with pytest.raises(ValueError, match="already registered"):
        registry.add(breaker(clock, store))
    with pytest.raises(NotFound):
        await BreakerRegistry(metrics=ResilienceMetrics(CollectorRegistry())).reset("x")


async def test_operator_states_are_not_overridden_by_a_trip_elsewhere() -> None:
    store = MemoryBreakerStateStore()
    clock_a, clock_b = ManualClock(), ManualClock()
    a, b = breaker(clock_a, store), breaker(clock_b, store)
    b.transition_to(BreakerState.DISABLED, TransitionReason.OPERATOR)
    clock_a.advance(1)
    await trip(a)
    clock_b.advance(2)
    assert await b.call(ok) == "ok"
    assert b.state is BreakerState.DISABLED


def test_stores_are_chosen_by_url() -> None:
    assert isinstance(store_from_url("memory://"), MemoryBreakerStateStore)
    with pytest.raises(ConfigurationError):
        store_from_url("zookeeper://x")

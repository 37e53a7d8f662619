"""Breakers sharing state through the real Redis (db 4), and surviving its loss.

Redis is cut with a small TCP proxy of our own in front of it; the shared Redis itself is
never stopped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as redis_asyncio
from prometheus_client import CollectorRegistry
from tests.support.proxy import TcpProxy
from tests.support.services import REDIS_HOST, REDIS_PORT, redis_url

from keel.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    RedisBreakerStateStore,
    ResilienceMetrics,
    StateStoreUnavailable,
    TransitionReason,
    force_open_breaker,
    list_breakers,
    reset_breaker,
)
from keel.resilience._store import BreakerRecord
from keel.testing import ManualClock, capture_logs

pytestmark = pytest.mark.redis

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


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url = redis_url(4)
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis_asyncio.Redis.from_url(url)
    await client.delete(f"{name}:breakers")
    await client.aclose()


@pytest.fixture
async def stores(prefix: str) -> AsyncIterator[list[RedisBreakerStateStore]]:
    made: list[RedisBreakerStateStore] = []
    yield made
    for store in made:
        await store.aclose()


def redis_store(
    stores: list[RedisBreakerStateStore], prefix: str, url: str | None = None
) -> RedisBreakerStateStore:
    store = RedisBreakerStateStore.from_url(url or redis_url(4), prefix=prefix)
    stores.append(store)
    return store


def make(clock: ManualClock, store: RedisBreakerStateStore) -> CircuitBreaker:
    return CircuitBreaker(
        "storage", CONFIG, clock=clock, store=store, metrics=ResilienceMetrics(CollectorRegistry())
    )


async def trip(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        with pytest.raises(Boom):
            await breaker.call(boom)
    assert breaker.state is BreakerState.OPEN


async def test_one_process_trips_and_the_other_rejects_within_its_cache_interval(
    stores: list[RedisBreakerStateStore], prefix: str
) -> None:
    clock_a, clock_b = ManualClock(), ManualClock()
    a = make(clock_a, redis_store(stores, prefix))
    b = make(clock_b, redis_store(stores, prefix))
    assert await b.call(ok) == "ok"
    clock_a.advance(0.5)
    clock_b.advance(0.5)
    await trip(a)
    assert await b.call(ok) == "ok"  # cached view, < 1 s old
    clock_b.advance(0.5)
    with pytest.raises(BreakerOpen):
        await b.call(ok)
    assert b.state is BreakerState.OPEN


async def test_publish_keeps_the_newer_record(
    stores: list[RedisBreakerStateStore], prefix: str
) -> None:
    store = redis_store(stores, prefix)
    clock = ManualClock()
    newer = BreakerRecord("x", BreakerState.OPEN, clock.now(), TransitionReason.REMOTE, "a")
    older = BreakerRecord(
        "x", BreakerState.CLOSED, clock.now() - timedelta(seconds=1), TransitionReason.REMOTE, "b"
    )
    assert await store.publish(newer) is True
    assert await store.publish(older) is False
    assert await store.read("x") == newer
    assert await store.read("nothing") is None
    assert await store.read_all() == [newer]


async def test_cli_functions_over_redis_reach_a_server_breaker(
    stores: list[RedisBreakerStateStore], prefix: str
) -> None:
    server_clock, cli_clock = ManualClock(), ManualClock()
    server = make(server_clock, redis_store(stores, prefix))
    await server.call(ok)
    cli_store = redis_store(stores, prefix)
    cli_clock.advance(1)
    await force_open_breaker(cli_store, "storage", clock=cli_clock)
    assert [r.state for r in await list_breakers(cli_store)] == [BreakerState.FORCED_OPEN]
    server_clock.advance(1)
    with pytest.raises(BreakerOpen):
        await server.call(ok)
    cli_clock.advance(1)
    await reset_breaker(cli_store, "storage", clock=cli_clock)
    server_clock.advance(1)
    assert await server.call(ok) == "ok"
    assert server.state is BreakerState.CLOSED


async def test_the_breaker_keeps_working_while_redis_is_cut(
    stores: list[RedisBreakerStateStore], prefix: str
) -> None:
    redis_url(4)  # skip (or fail in CI) when Redis is down
    proxy = await TcpProxy(REDIS_HOST, REDIS_PORT).start()
    try:
        via_proxy = redis_store(stores, prefix, f"redis://127.0.0.1:{proxy.port}/4")
        direct = redis_store(stores, prefix)
        clock = ManualClock()
        breaker = make(clock, via_proxy)
        async with asyncio.timeout(10):
            assert await breaker.call(ok) == "ok"  # synced through the proxy
            await proxy.cut()
            clock.advance(1)
            with capture_logs() as logs:
                for _ in range(3):  # ok, f, f, f: 75 % of 4 calls trips on the third failure
                    with pytest.raises(Boom):
                        await breaker.call(boom)  # the first sync fails; the calls do not
            assert breaker.state is BreakerState.OPEN
            assert any(line["event"] == "breaker_store_unavailable" for line in logs)
            with pytest.raises(StateStoreUnavailable):
                await via_proxy.read("storage")
            with pytest.raises(BreakerOpen):
                await breaker.call(ok)
            stored = await direct.read("storage")
            assert stored is None or stored.state is BreakerState.CLOSED  # never reached Redis

            await proxy.restore()
            clock.advance(1)
            with pytest.raises(BreakerOpen):
                await breaker.call(ok)  # the next sync publishes what the outage held back
            stored = await direct.read("storage")
            assert stored is not None
            assert stored.state is BreakerState.OPEN

            clock.advance(30)
            assert await breaker.call(ok) == "ok"
            assert breaker.state is BreakerState.CLOSED
    finally:
        await proxy.cut()

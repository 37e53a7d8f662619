"""Redis cut mid-test through a proxy of our own: decisions go local, then come back.

The shared Redis is never stopped: a small asyncio TCP proxy stands in front
of it, and closing the proxy is the outage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from tests.support.proxy import TcpProxy
from tests.support.services import REDIS_HOST, REDIS_PORT, redis_url

from keel.guard.ratelimit.fallback import FallbackBackend, FallbackMetrics
from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.limiter import RateLimiter, RequestContext
from keel.guard.ratelimit.policy import parse_policy
from keel.guard.ratelimit.redis_backend import RedisBackend
from keel.testing import ManualClock, capture_logs

pytestmark = pytest.mark.redis

DB = 3
NOW = 1_800_000_000.0
RATE = Rate(limit=60, period=60, burst=10)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    redis_url(DB)  # skip (or fail in CI) when Redis is not there
    proxy = await TcpProxy(REDIS_HOST, REDIS_PORT).start()
    try:
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            await proxy.cut()


@pytest.fixture
async def direct() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url(DB))
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def test_cut_redis_falls_back_locally_and_recovers(proxy: TcpProxy, direct: Redis) -> None:
    clock = ManualClock()
    registry = CollectorRegistry()
    primary = RedisBackend.from_url(f"redis://127.0.0.1:{proxy.port}/{DB}", timeout=0.5)
    backend = FallbackBackend(
        primary, instances=2, cooldown=5.0, clock=clock, metrics=FallbackMetrics(registry)
    )
    try:
        # Up: decided on Redis.
        assert (await backend.gcra("k", RATE, NOW)).allowed
        assert not backend.degraded
        assert await direct.exists("keel:rl:g:k") == 1

        # Cut: every decision is local, with half the burst (two instances).
        await proxy.cut()
        with capture_logs() as logs:
            decisions = [await backend.gcra("k", RATE, NOW) for _ in range(8)]
        assert backend.degraded
        assert [d.allowed for d in decisions].count(True) == 5
        assert [e["event"] for e in logs] == ["ratelimit.fallback.engaged"]
        assert (
            registry.get_sample_value(
                "keel_ratelimit_fallback_decisions_total", {"operation": "gcra"}
            )
            == 8
        )

        # Restored, cooldown over: the next decision goes to Redis again.
        await proxy.restore()
        clock.advance(5.0)
        with capture_logs() as logs:
            back = await backend.gcra("k", RATE, NOW)
        assert not backend.degraded
        assert [e["event"] for e in logs] == ["ratelimit.fallback.recovered"]
        # Redis still held its one cell from before the cut: 10 - 1 - 1 left.
        assert back.remaining == 8
    finally:
        await backend.aclose()


async def test_the_limiter_keeps_serving_through_the_cut(proxy: TcpProxy, direct: Redis) -> None:
    policy = parse_policy(
        """
version = 1
[[limits]]
name = "user-rate"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = 60
period_seconds = 60
burst = 4
"""
    )
    primary = RedisBackend.from_url(f"redis://127.0.0.1:{proxy.port}/{DB}", timeout=0.5)
    backend = FallbackBackend(primary, instances=1, metrics=FallbackMetrics(None))
    limiter = RateLimiter(backend)
    context = RequestContext(route="GET /v1/things", user_id="u1")
    try:
        assert (await limiter.decide(policy.limits, context, NOW)).allowed
        await proxy.cut()
        outcomes = [(await limiter.decide(policy.limits, context, NOW)).allowed for _ in range(6)]
        assert outcomes == [True] * 4 + [False] * 2
        assert backend.degraded
    finally:
        await backend.aclose()

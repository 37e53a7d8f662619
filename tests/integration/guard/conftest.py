"""Fixtures for the limiter backends: memory, and Redis on db 1 flushed around each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from tests.support.services import redis_url

from keel.guard.ratelimit.backend import LimiterBackend
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.redis_backend import RedisBackend

CONTRACT_DB = 1


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url(CONTRACT_DB))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[LimiterBackend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    client = Redis.from_url(redis_url(CONTRACT_DB))
    await client.flushdb()
    try:
        yield RedisBackend(client, timeout=2.0)
    finally:
        await client.flushdb()
        await client.aclose()

"""A Redis call that fails in any of the ways a cut connection shows is the limiter's
outage (``LimiterUnavailable``, which the fallback answers), never an unhandled error."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from keel.guard.ratelimit.errors import LimiterUnavailable
from keel.guard.ratelimit.redis_backend import RedisBackend

# What uvloop raises when redis-py writes on a transport that closed as it connected.
CLOSED = (
    "unable to perform operation on <TCPTransport closed=True reading=False 0x5616>;"
    " the handler is closed"
)


async def failing(error: BaseException) -> Any:
    raise error


@pytest.fixture
async def backend() -> Any:
    client = Redis.from_url("redis://127.0.0.1:1/0")  # never connected: the calls are fakes
    try:
        yield RedisBackend(client, timeout=None)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "error",
    [RedisConnectionError("reset"), OSError("unreachable"), TimeoutError(), RuntimeError(CLOSED)],
)
async def test_a_cut_connection_is_the_limiters_outage(
    backend: RedisBackend, error: BaseException
) -> None:
    with pytest.raises(LimiterUnavailable):
        await backend._call(failing(error))


async def test_any_other_runtime_error_is_a_bug_and_is_not_masked(backend: RedisBackend) -> None:
    with pytest.raises(RuntimeError, match="something else"):
        await backend._call(failing(RuntimeError("something else")))

"""What only the Redis backend promises: TTLs, script loading, errors at the seam."""

from __future__ import annotations

import math

import pytest
from redis.asyncio import Redis

from keel.guard.ratelimit.errors import LimiterUnavailable
from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.quota import QuotaWindow
from keel.guard.ratelimit.redis_backend import RedisBackend, _Script

pytestmark = pytest.mark.redis

NOW = 1_800_000_000.0


async def test_every_key_carries_a_ttl_matching_its_meaning(redis_client: Redis) -> None:
    backend = RedisBackend(redis_client, prefix="t:")
    await backend.gcra("g", Rate(60, 60, 5), NOW, 3)
    window = QuotaWindow("hour")
    await backend.quota_consume("q", 5, window, NOW + 600)
    await backend.slot_acquire("s", 2, 45, NOW)
    await backend.slot_acquire("s", 2, 20, NOW)
    keys = sorted(k.decode() for k in await redis_client.keys("t:*"))
    assert len(keys) == 3
    ttls = {key.split(":")[1]: await redis_client.pttl(key) for key in keys}
    assert 2900 < ttls["g"] <= 3000  # three cells of one second each
    assert 2_990_000 < ttls["q"] <= 3_000_000  # the rest of the hour
    assert 44_000 < ttls["s"] <= 45_000  # the longest lease


async def test_a_reserved_quota_counter_lives_until_its_window_ends(redis_client: Redis) -> None:
    backend = RedisBackend(redis_client, prefix="t:")
    window = QuotaWindow("hour")
    assert (await backend.admit([], [("q", 5, window)], [], NOW + 600)).allowed
    [key] = [k.decode() for k in await redis_client.keys("t:*")]
    assert await redis_client.get(key) == b"1"
    assert 2_990_000 < await redis_client.pttl(key) <= 3_000_000  # the rest of the hour
    refused = await backend.admit([("g", Rate(60, 60, 1))], [("q2", 5, window)], [], NOW)
    assert refused.allowed
    refused = await backend.admit([("g", Rate(60, 60, 1))], [("q2", 5, window)], [], NOW)
    assert not refused.allowed
    assert await redis_client.get("t:q:q2@" + key.split("@")[1]) == b"1"  # refusal: untouched


async def test_denials_and_peeks_write_nothing(redis_client: Redis) -> None:
    backend = RedisBackend(redis_client, prefix="t:")
    await backend.gcra("g", Rate(60, 60, 1), NOW, 0)
    await backend.quota_check("q", 1, QuotaWindow("day"), NOW)
    await backend.quota_consume("q0", 1, QuotaWindow("day"), NOW, 2)
    assert await redis_client.keys("t:*") == []


async def test_a_script_redis_has_never_seen_is_loaded_on_noscript(redis_client: Redis) -> None:
    # A script unique to this run, so the test never flushes the shared script cache.
    script = _Script(f"-- {id(redis_client)} {NOW}\nreturn tonumber(ARGV[1]) + 1")
    assert (await redis_client.script_exists(script.sha)) == [False]
    assert await script(redis_client, [], [41]) == 42
    assert (await redis_client.script_exists(script.sha)) == [True]


async def test_load_scripts_preloads_everything(redis_client: Redis) -> None:
    await RedisBackend(redis_client).load_scripts()


async def test_an_unreachable_redis_is_reported_as_limiter_unavailable() -> None:
    # A port nothing listens on: connection refused, translated at the seam.
    backend = RedisBackend.from_url("redis://127.0.0.1:9/1", timeout=0.5)
    try:
        with pytest.raises(LimiterUnavailable) as caught:
            await backend.gcra("k", Rate(1, 1, 1), NOW)
        assert caught.value.status == 503
    finally:
        await backend.aclose()


async def test_large_epoch_floats_survive_the_round_trip(redis_client: Redis) -> None:
    backend = RedisBackend(redis_client, prefix="t:")
    now = 1_800_000_000.000_123
    rate = Rate(1000, 1, 3)
    decisions = [await backend.gcra("g", rate, now) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert math.isclose(decisions[-1].retry_after, 0.001, rel_tol=1e-3)
    assert (await backend.gcra("g", rate, now + decisions[-1].retry_after)).allowed

"""What the Redis backend promises about admission: one round trip, whatever the request.

Round trips are counted on the wire, by a redis-py connection class that
records every command it sends — the kept connection and pooled ones alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from tests.integration.guard.conftest import CONTRACT_DB
from tests.support.services import redis_url

from keel.guard.ratelimit import (
    RateCheck,
    RateLimiter,
    RedisBackend,
    RequestContext,
    SlotClaim,
    default_policy,
)
from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.quota import QuotaWindow
from keel.guard.ratelimit.redis_backend import _Script

pytestmark = pytest.mark.redis

NOW = 1_800_000_000.0
SENT: list[str] = []


class CountingConnection(Connection):
    """Records the name of every command written to the socket."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        SENT.append(
            bytes(command[0] if isinstance(command, list) else command).split(b"\r\n")[2].decode()
        )
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counted(redis_client: Redis) -> AsyncIterator[RedisBackend]:
    pool = ConnectionPool.from_url(redis_url(CONTRACT_DB), connection_class=CountingConnection)
    client = Redis(connection_pool=pool)
    backend = RedisBackend(client, prefix="t:", timeout=2.0)
    await backend.load_scripts()
    await backend.admit([RateCheck("warm", Rate(60, 60, 5))], [], [], NOW)  # connect the lane
    SENT.clear()
    try:
        yield backend
    finally:
        await backend.aclose()
        await client.aclose()
        await pool.disconnect()


async def test_a_request_with_every_kind_of_limit_is_one_round_trip(
    counted: RedisBackend,
) -> None:
    limiter = RateLimiter(counted)
    # The default policy on a create: api-user and api-org rates, the daily quota.
    context = RequestContext(
        route="POST /v1/recognitions",
        operation="recognitions.create",
        user_id="u1",
        org_id="o1",
        plan="team",
    )
    claims = [SlotClaim("slots:user:u1", 20, 120.0), SlotClaim("slots:org:o1", 200, 120.0)]
    decision = await limiter.decide(default_policy().limits, context, NOW, slots=claims)
    assert decision.allowed
    assert [r.name for r in decision.results] == ["recognitions-daily", "api-user", "api-org"]
    assert [s.acquired for s in decision.slots] == [True, True]
    assert SENT == ["EVALSHA"]


async def test_a_refusal_is_one_round_trip_too(counted: RedisBackend) -> None:
    checks = [RateCheck("u", Rate(60, 60, 5)), RateCheck("o", Rate(60, 60, 1))]
    await counted.admit(checks, [], [], NOW)
    assert not (await counted.admit(checks, [], [], NOW)).allowed
    assert SENT == ["EVALSHA", "EVALSHA"]


async def test_concurrent_decisions_share_the_kept_connection_safely(
    counted: RedisBackend,
) -> None:
    # Forty at once: one rides the kept connection, the rest take the pool,
    # and together they still admit exactly the burst.
    checks = [RateCheck("u", Rate(60, 60, 50)), RateCheck("o", Rate(60, 60, 17))]
    outcomes = await asyncio.gather(*(counted.admit(checks, [], [], NOW) for _ in range(40)))
    assert sum(a.allowed for a in outcomes) == 17
    assert (await counted.gcra("u", Rate(60, 60, 50), NOW, 0)).remaining == 33


async def test_noscript_on_the_kept_connection_loads_and_retries(counted: RedisBackend) -> None:
    # A script unique to this run, so the test never flushes the shared script cache.
    script = _Script(f"-- {id(counted)} {NOW} lane\nreturn tonumber(ARGV[1]) * 2")
    assert await counted._evalsha(script, [], [21]) == 42
    assert SENT == ["EVALSHA", "SCRIPT", "EVALSHA"]


async def test_state_either_script_writes_is_read_alike_by_the_other(
    counted: RedisBackend,
) -> None:
    # The GCRA and ADMIT scripts share one stored TAT per key. Driven in
    # lockstep with the memory backend over made-up times (a burst, refusals,
    # a clock that jumps back past the tolerance, recovery), every reading of
    # either script must equal the memory backend's, field for field, so each
    # script reads exactly what the other wrote.
    memory = MemoryBackend()
    rate = Rate(limit=7, period=3, burst=3)  # an interval of 3/7 s: no round number
    other = Rate(limit=60, period=60, burst=100)
    steps = [
        ("gcra", NOW),
        ("admit", NOW + 0.001),
        ("gcra", NOW + 0.002),
        ("admit", NOW + 0.003),  # refused: the burst is spent
        ("gcra", NOW + 0.4),
        ("admit", NOW + 0.43),
        ("admit", NOW - 120.000_1),  # backwards: the refusal stores the clamped TAT
        ("gcra", NOW - 119.5),
        ("admit", NOW - 119.0),
        ("gcra", NOW - 118.9),
    ]
    for op, now in steps:
        if op == "gcra":
            readings = [await backend.gcra("k", rate, now) for backend in (counted, memory)]
        else:
            checks = [("k", rate), ("o", other)]
            admissions = [await b.admit(checks, [], [], now) for b in (counted, memory)]
            assert admissions[0].allowed == admissions[1].allowed, (op, now)
            readings = [a.rates[0] for a in admissions]
        assert readings[0] == readings[1], (op, now)
    raw = await counted.client.get("t:g:k")
    assert raw is not None
    assert float(raw) == memory._tats["k"]  # the stored text round-trips the float exactly


async def test_quota_reservations_and_releases_read_alike_on_both_backends(
    counted: RedisBackend,
) -> None:
    # Reserve, refuse, release and cross a window edge in lockstep: every
    # quota reading of the ADMIT script equals the memory backend's.
    memory = MemoryBackend()
    window = QuotaWindow("hour", "Europe/London")
    start, end = window.bounds(NOW)
    rate = Rate(limit=60, period=60, burst=4)
    steps: list[tuple[str, float, int]] = [
        ("admit", start + 1, 1),
        ("admit", start + 2, 2),
        ("admit", start + 3, 1),  # refused by the quota of 3
        ("release", start + 1, 1),
        ("admit", start + 4, 1),
        ("admit", start + 5, 0),  # a peek
        ("admit", start + 5.5, 1),  # refused by the rate's burst of 4: nothing reserved
        ("admit", end + 1, 1),  # a new window
        ("release", start + 2, 2),  # gives back to the window it was reserved in
        ("admit", start + 6, 2),
    ]
    for op, now, n in steps:
        if op == "release":
            for backend in (counted, memory):
                await backend.quota_refund("q", window, now, n)
            continue
        admissions = [
            await b.admit([("r", rate)], [("q", 3, window)], [], now, n) for b in (counted, memory)
        ]
        assert admissions[0] == admissions[1], (op, now, n)
    for now in (start + 10, end + 10):
        readings = [await b.quota_check("q", 3, window, now, 0) for b in (counted, memory)]
        assert readings[0] == readings[1]

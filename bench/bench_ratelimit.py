"""Rate-limit decisions per second: Keel's limiter against the `limits` library.

Run: ``flock /tmp/keel-bench.lock .venv/bin/python bench/bench_ratelimit.py [--rounds R]``

A *decision* is what Keel decides for a request: every limit the request
passes. Here, as for a ``POST /v1/recognitions`` under the default policy,
that is a per-user rate, a per-organisation rate and a per-user daily quota:

* Keel: one ``admit`` call with two rate checks and one quota reservation (all or
  nothing; on Redis one ``EVALSHA``), and — for transparency — the same
  request through ``RateLimiter.decide`` (policy matching, plan numbers and
  key building included) with the default policy.
* ``limits``: it has no multi-limit atomic call, so the same work is one
  ``hit`` per limit — user rate, org rate (each strategy in turn) and the
  daily quota (a fixed window per day, the nearest it has to a calendar
  quota) — three awaited calls, three round trips on Redis.

Single-limit rows (one GCRA ``gcra`` call against one ``hit``) are kept for
comparison with earlier runs. The floor for a Redis round trip is a raw
redis-py asyncio ``PING`` (``client.ping()``, through the pool as any redis-py
command goes); a ``PING`` on a connection kept out of the pool — the way
Keel's backend sends its script — is shown beside it.

Same run, same process, same key spread for everyone: 1,000 users in 50
organisations, round-robin; ``now`` read from the clock on each decision;
one awaited decision at a time (latency bound, as a request path is). Limits
are generous enough that nothing is refused (checked: refusals are counted
and must be 0). Redis work uses db 3 on 127.0.0.1:6379, flushed before and
after. Each figure is the median of ``--rounds`` rounds; within a round the
contenders take turns in 25 slices (the order rotating slice by slice), so
drift in machine load hits all of them alike. The memory contenders run first,
then the Redis ones: the two groups are never compared with each other, and
``limits``' in-memory storage leaves expiry tasks that would otherwise run
while the Redis contenders wait on the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.asyncio import Redis

from keel.guard.ratelimit import (
    LimitOverride,
    MemoryBackend,
    Rate,
    RateLimiter,
    RedisBackend,
    RequestContext,
    default_policy,
)
from keel.guard.ratelimit.quota import QuotaWindow

REDIS_URL = "redis://127.0.0.1:6379/3"
USERS = [f"u{i}" for i in range(1000)]
ORGS = [f"o{i % 50}" for i in range(1000)]
# Generous, so that no contender refuses anything over the whole run.
USER_RATE = Rate(limit=6000, period=60, burst=2000)
ORG_RATE = Rate(limit=60000, period=60, burst=50000)
QUOTA = 1_000_000
DAY = QuotaWindow("day")
USER_ITEM = RateLimitItemPerMinute(6000)
ORG_ITEM = RateLimitItemPerMinute(60000)
QUOTA_ITEM = RateLimitItemPerDay(QUOTA)

SLICES = 25
"""Slices per round: each contender's decisions of a round are spread over them."""

Step = Callable[[int], Awaitable[bool]]
"""One decision for the i-th caller: True when admitted."""


async def measure(step: Step, decisions: int, first: int = 0) -> tuple[float, int]:
    """Seconds for ``decisions`` sequential awaits (callers ``first``, ``first + 1``, …)."""
    count = len(USERS)
    refused = 0
    start = time.perf_counter()
    for i in range(first, first + decisions):
        if not await step(i % count):
            refused += 1
    return time.perf_counter() - start, refused


# --- Keel ------------------------------------------------------------------------


def keel_admit(backend: MemoryBackend | RedisBackend) -> Step:
    clock = time.time
    no_slots = ()

    async def step(i: int) -> bool:
        user = USERS[i]
        # Plain (key, rate) / (key, limit, window) tuples: what RateCheck and
        # QuotaCheck name, without their Python-level constructors.
        admission = await backend.admit(
            (("api-user:user:" + user, USER_RATE), ("api-org:org:" + ORGS[i], ORG_RATE)),
            (("recognitions-daily:user:" + user, QUOTA, DAY),),
            no_slots,
            clock(),
        )
        return admission.allowed

    return step


def keel_decide(backend: MemoryBackend | RedisBackend) -> Step:
    limiter = RateLimiter(backend)
    # The default policy scaled up (enterprise plan, and an override lifting the
    # per-user numbers) so nothing refuses; the rules matched stay the same three.
    policy = default_policy()
    rules = policy.limits
    contexts = [
        RequestContext(
            route="POST /v1/recognitions",
            operation="recognitions.create",
            user_id=user,
            org_id=org,
            plan="enterprise",
            overrides=_GENEROUS,
        )
        for user, org in zip(USERS, ORGS, strict=True)
    ]
    clock = time.time

    async def step(i: int) -> bool:
        return (await limiter.decide(rules, contexts[i], clock())).allowed

    return step


def _generous() -> dict[str, LimitOverride]:
    return {
        "api-user": LimitOverride(limit=USER_RATE.limit, burst=USER_RATE.burst),
        "api-org": LimitOverride(limit=ORG_RATE.limit, burst=ORG_RATE.burst),
        "recognitions-daily": LimitOverride(limit=QUOTA),
    }


_GENEROUS = _generous()


def keel_single(backend: MemoryBackend | RedisBackend) -> Step:
    clock = time.time

    async def step(i: int) -> bool:
        return (await backend.gcra("api-user:user:" + USERS[i], USER_RATE, clock())).allowed

    return step


# --- limits ----------------------------------------------------------------------

Strategy = FixedWindowRateLimiter | MovingWindowRateLimiter | SlidingWindowCounterRateLimiter


def limits_request(rates: Strategy, quota: FixedWindowRateLimiter) -> Step:
    async def step(i: int) -> bool:
        user = USERS[i]
        # No atomic multi-limit call: one hit per limit, stopping at a refusal.
        return (
            await rates.hit(USER_ITEM, "user", user)
            and await rates.hit(ORG_ITEM, "org", ORGS[i])
            and await quota.hit(QUOTA_ITEM, "quota", user)
        )

    return step


def limits_single(rates: Strategy) -> Step:
    async def step(i: int) -> bool:
        return await rates.hit(USER_ITEM, "single", USERS[i])

    return step


# --- the floor -------------------------------------------------------------------


def ping_pool(client: Redis) -> Step:
    async def step(_i: int) -> bool:
        return bool(await client.ping())

    return step


def ping_kept(connection: Any) -> Step:
    async def step(_i: int) -> bool:
        await connection.send_command("PING")
        return bool(await connection.read_response())

    return step


STRATEGIES: dict[str, type[Strategy]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}


Contenders = dict[str, tuple[Step, int]]


async def interleave(contenders: Contenders, rounds: int) -> dict[str, list[float]]:
    """Decisions per second per contender per round, the contenders taking turns."""
    # Warm-up: connections open, scripts cached, code paths hot.
    for name, (step, n) in contenders.items():
        _, refused = await measure(step, min(n, 2000))
        if refused:
            raise SystemExit(f"{name} refused {refused} in the warm-up: limits too tight")

    # Each round is cut into SLICES slices; within a slice every contender runs
    # its share back to back, in an order that rotates slice by slice. Load
    # from other processes changes over seconds, so this spreads it over all
    # contenders alike instead of letting it land on whichever ran during a spike.
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    refusals = dict.fromkeys(contenders, 0)
    names = list(contenders)
    for _ in range(rounds):
        elapsed = dict.fromkeys(contenders, 0.0)
        for slice_ in range(SLICES):
            shift = slice_ % len(names)
            for name in names[shift:] + names[:shift]:
                step, n = contenders[name]
                share = n // SLICES
                seconds, refused = await measure(step, share, slice_ * share)
                elapsed[name] += seconds
                refusals[name] += refused
        for name, (_, n) in contenders.items():
            samples[name].append(n // SLICES * SLICES / elapsed[name])
    if any(refusals.values()):
        raise SystemExit(f"refusals during the run (limits too tight): {refusals}")
    return samples


async def run_memory(decisions: int, rounds: int) -> dict[str, list[float]]:
    contenders: Contenders = {
        "memory/request/keel-admit": (keel_admit(MemoryBackend()), decisions),
        "memory/request/keel-decide": (keel_decide(MemoryBackend()), decisions),
    }
    storages = []
    for label, strategy in STRATEGIES.items():
        storage = MemoryStorage()
        storages.append(storage)
        contenders[f"memory/request/limits-{label}"] = (
            limits_request(strategy(storage), FixedWindowRateLimiter(storage)),
            decisions,
        )
    contenders["memory/single/keel-gcra"] = (keel_single(MemoryBackend()), decisions)
    for label, strategy in STRATEGIES.items():
        storage = MemoryStorage()
        storages.append(storage)
        contenders[f"memory/single/limits-{label}"] = (limits_single(strategy(storage)), decisions)
    samples = await interleave(contenders, rounds)
    # limits' MemoryStorage starts a task on a hit to expire old entries (a
    # thread hop per key for the moving window). Nothing here suspends, so
    # those tasks never ran during the memory rounds; let them finish now, or
    # they would run during — and be counted against — the Redis rounds.
    await asyncio.gather(*(s.timer for s in storages if s.timer is not None))
    return samples


async def run_redis(redis_decisions: int, rounds: int) -> dict[str, list[float]]:
    flush = Redis.from_url(REDIS_URL)
    await flush.flushdb()
    redis_backend = RedisBackend.from_url(REDIS_URL, timeout=2.0)
    await redis_backend.load_scripts()
    decide_backend = RedisBackend.from_url(REDIS_URL, timeout=2.0)
    ping_client = Redis.from_url(REDIS_URL, socket_timeout=2.0)
    kept = await ping_client.connection_pool.get_connection()  # type: ignore[no-untyped-call]

    contenders: Contenders = {
        "redis/request/keel-admit": (keel_admit(redis_backend), redis_decisions),
        "redis/request/keel-decide": (keel_decide(decide_backend), redis_decisions),
    }
    for label, strategy in STRATEGIES.items():
        storage = RedisStorage(
            "async+" + REDIS_URL, implementation="redispy", key_prefix=f"bench-{label}"
        )
        contenders[f"redis/request/limits-{label}"] = (
            limits_request(strategy(storage), FixedWindowRateLimiter(storage)),
            redis_decisions,
        )
    contenders["redis/single/keel-gcra"] = (keel_single(redis_backend), redis_decisions)
    single_storage = RedisStorage(
        "async+" + REDIS_URL, implementation="redispy", key_prefix="bench-single"
    )
    contenders["redis/single/limits-fixed-window"] = (
        limits_single(FixedWindowRateLimiter(single_storage)),
        redis_decisions,
    )
    contenders["redis/floor/ping-pool"] = (ping_pool(ping_client), redis_decisions)
    contenders["redis/floor/ping-kept-connection"] = (ping_kept(kept), redis_decisions)
    samples = await interleave(contenders, rounds)

    await ping_client.connection_pool.release(kept)
    for closable in (redis_backend, decide_backend):
        await closable.aclose()
    await ping_client.aclose()
    await flush.flushdb()
    await flush.aclose()
    return samples


async def run(decisions: int, redis_decisions: int, rounds: int) -> dict[str, list[float]]:
    """The memory contenders, then the Redis ones: each group interleaved within itself."""
    samples = await run_memory(decisions, rounds)
    gc.collect()  # the memory contenders' garbage, not the Redis rounds' to collect
    samples |= await run_redis(redis_decisions, rounds)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50_000, help="per memory round")
    parser.add_argument("--redis-decisions", type=int, default=3_000, help="per Redis round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples = asyncio.run(run(args.decisions, args.redis_decisions, args.rounds))
    results = {name: statistics.median(values) for name, values in samples.items()}

    print(f"python {platform.python_version()} on {platform.machine()}, {args.rounds} rounds")
    for name, rate in results.items():
        print(f"{name:42s} {rate:12,.0f} decisions/s")

    def row(label: str, a: str, b: str, target: str = "") -> None:
        # Ratio of the medians, and the median of the per-round ratios (the
        # contenders of one round ran back to back, so it is steadier).
        paired = statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))
        print(f"{label:60s} {results[a] / results[b]:6.2f}x  (per round {paired:5.2f}x)  {target}")

    print()
    print("A request (user rate + org rate + daily quota):")
    for label in STRATEGIES:
        target = "target >= 3" if label == "fixed-window" else ""
        row(
            f"  memory  keel admit / limits {label}",
            "memory/request/keel-admit",
            f"memory/request/limits-{label}",
            target,
        )
    row(
        "  memory  keel decide (policy included) / limits fixed-window",
        "memory/request/keel-decide",
        "memory/request/limits-fixed-window",
    )
    for label in STRATEGIES:
        target = "target >= 1.5" if label == "fixed-window" else ""
        row(
            f"  redis   keel admit / limits {label}",
            "redis/request/keel-admit",
            f"redis/request/limits-{label}",
            target,
        )
    row(
        "  redis   keel decide (policy included) / limits fixed-window",
        "redis/request/keel-decide",
        "redis/request/limits-fixed-window",
    )
    row(
        "  redis   keel admit time / redis-py PING time",
        "redis/floor/ping-pool",
        "redis/request/keel-admit",
        "target <= 1.2",
    )
    row(
        "  redis   keel decide time / redis-py PING time",
        "redis/floor/ping-pool",
        "redis/request/keel-decide",
    )
    row(
        "  redis   keel admit time / PING on a kept connection",
        "redis/floor/ping-kept-connection",
        "redis/request/keel-admit",
    )
    print("One limit (for comparison with earlier runs):")
    for label in STRATEGIES:
        row(
            f"  memory  keel gcra / limits {label}",
            "memory/single/keel-gcra",
            f"memory/single/limits-{label}",
        )
    row(
        "  redis   keel gcra / limits fixed-window",
        "redis/single/keel-gcra",
        "redis/single/limits-fixed-window",
    )
    row(
        "  redis   keel gcra time / redis-py PING time",
        "redis/floor/ping-pool",
        "redis/single/keel-gcra",
    )


if __name__ == "__main__":
    sys.exit(main())

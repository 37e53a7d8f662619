"""Rate-limit decisions per second: Keel's GCRA backends against the `limits` library.

Run: ``.venv/bin/python bench/bench_ratelimit.py [--decisions N] [--rounds R]``

Everything runs in this one process, the same run, against the same key
spread (1,000 keys, round-robin), awaiting one decision at a time (latency
bound, as a request path is). Redis work uses db 3 on 127.0.0.1:6379, flushed
before and after. Compared:

* memory: ``keel.guard.ratelimit.MemoryBackend.gcra`` against
  ``limits.aio`` ``MemoryStorage`` with each of its strategies (fixed window,
  its fastest; moving window and sliding-window counter, closer to GCRA's
  smoothing). Each limiter admits 100/minute per key.
* Redis: ``RedisBackend.gcra`` (one EVALSHA) against ``limits.aio``
  ``RedisStorage`` on redis-py (``implementation="redispy"``), same strategies.
* floor: a raw redis-py asyncio ``PING`` loop on the same kind of connection,
  the cost of one round trip with nothing done.

Each figure is the median of ``--rounds`` rounds; rounds alternate between
contenders so drift in machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.asyncio import Redis

from keel.guard.ratelimit import MemoryBackend, Rate, RedisBackend

REDIS_URL = "redis://127.0.0.1:6379/3"
KEYS = [f"user:{i}" for i in range(1000)]
RATE = Rate(limit=100, period=60, burst=100)
ITEM = RateLimitItemPerMinute(100)

Step = Callable[[str], Awaitable[object]]
"""One decision for a key: each contender's own coroutine, awaited directly."""


async def measure(step: Step, decisions: int) -> float:
    """Decisions per second for ``decisions`` sequential awaits of ``step``."""
    keys = KEYS
    count = len(keys)
    start = time.perf_counter()
    for i in range(decisions):
        await step(keys[i % count])
    return decisions / (time.perf_counter() - start)


def keel_step(backend: MemoryBackend | RedisBackend) -> Step:
    # A fixed "now" per step is fine: 100/min per key over 1,000 keys never refuses
    # within a round, and partial() adds no coroutine layer of its own.
    return functools.partial(backend.gcra, rate=RATE, now=time.time())


def limits_step(
    strategy: FixedWindowRateLimiter | MovingWindowRateLimiter | SlidingWindowCounterRateLimiter,
) -> Step:
    return functools.partial(strategy.hit, ITEM)


def ping_step(client: Redis) -> Step:
    return lambda _key: client.ping()


async def run(decisions: int, redis_decisions: int, rounds: int) -> dict[str, float]:
    flush = Redis.from_url(REDIS_URL)
    await flush.flushdb()

    memory = MemoryBackend()
    redis_backend = RedisBackend.from_url(REDIS_URL, timeout=2.0)
    await redis_backend.load_scripts()
    ping_client = Redis.from_url(REDIS_URL)
    strategies = {
        "fixed-window": FixedWindowRateLimiter,
        "moving-window": MovingWindowRateLimiter,
        "sliding-window-counter": SlidingWindowCounterRateLimiter,
    }

    contenders: dict[str, tuple[Step, int]] = {"memory/keel-gcra": (keel_step(memory), decisions)}
    for label, strategy in strategies.items():
        # A storage each: the strategies keep different value types under one key name.
        contenders[f"memory/limits-{label}"] = (limits_step(strategy(MemoryStorage())), decisions)
    contenders["redis/keel-gcra"] = (keel_step(redis_backend), redis_decisions)
    for label, strategy in strategies.items():
        storage = RedisStorage(
            "async+" + REDIS_URL, implementation="redispy", key_prefix=f"bench-{label}"
        )
        contenders[f"redis/limits-{label}"] = (limits_step(strategy(storage)), redis_decisions)
    contenders["redis/raw-ping"] = (ping_step(ping_client), redis_decisions)
    # Warm-up: connections open, scripts cached, code paths hot.
    for step, n in contenders.values():
        await measure(step, min(n, 2000))

    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (step, n) in contenders.items():
            samples[name].append(await measure(step, n))

    await redis_backend.aclose()
    await ping_client.aclose()
    await flush.flushdb()
    await flush.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50_000, help="per memory round")
    parser.add_argument("--redis-decisions", type=int, default=5_000, help="per Redis round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(run(args.decisions, args.redis_decisions, args.rounds))

    print(f"python {platform.python_version()} on {platform.machine()}, {args.rounds} rounds")
    for name, rate in results.items():
        print(f"{name:40s} {rate:12,.0f} decisions/s")

    def ratio(a: str, b: str) -> float:
        return results[a] / results[b]

    print()
    print(
        "memory  keel / limits fixed window (its fastest):     "
        f"{ratio('memory/keel-gcra', 'memory/limits-fixed-window'):.2f}x  (target >= 3)"
    )
    print(
        "memory  keel / limits moving window:                  "
        f"{ratio('memory/keel-gcra', 'memory/limits-moving-window'):.2f}x"
    )
    print(
        "memory  keel / limits sliding window counter:         "
        f"{ratio('memory/keel-gcra', 'memory/limits-sliding-window-counter'):.2f}x"
    )
    print(
        "redis   keel / limits fixed window (its fastest):     "
        f"{ratio('redis/keel-gcra', 'redis/limits-fixed-window'):.2f}x  (target >= 1.5)"
    )
    print(
        "redis   keel / limits moving window:                  "
        f"{ratio('redis/keel-gcra', 'redis/limits-moving-window'):.2f}x"
    )
    print(
        "redis   keel / limits sliding window counter:         "
        f"{ratio('redis/keel-gcra', 'redis/limits-sliding-window-counter'):.2f}x"
    )
    print(
        "redis   keel decision time / raw PING round trip:     "
        f"{ratio('redis/raw-ping', 'redis/keel-gcra'):.2f}x  (target <= 1.2)"
    )


if __name__ == "__main__":
    sys.exit(main())

"""A worker process for the atomicity test: hammer shared keys, print what was admitted.

Run as ``python ratelimit_hammer.py URL ATTEMPTS NOW``; it connects, prints
``ready``, and fires when a line arrives on stdin, so every worker starts at
once whatever its import time. Each attempt asks for a GCRA cell, a quota unit
and a concurrency slot on keys all workers share, then for one admission of a
user and an org rate together (all or nothing); every decision uses the
made-up NOW, so nothing refills mid-test. Prints ``gcra quota slot admitted``
counts.
"""

from __future__ import annotations

import asyncio
import sys

from keel.guard.ratelimit.backend import RateCheck
from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.quota import QuotaWindow
from keel.guard.ratelimit.redis_backend import RedisBackend

RATE = Rate(limit=100, period=60, burst=50)
QUOTA_LIMIT = 37
SLOT_LIMIT = 5
ADMIT_USER = Rate(limit=100, period=60, burst=45)
ADMIT_ORG = Rate(limit=100, period=60, burst=30)
ADMIT_CHECKS = [RateCheck("admit-user", ADMIT_USER), RateCheck("admit-org", ADMIT_ORG)]


async def hammer(url: str, attempts: int, now: float) -> tuple[int, int, int, int]:
    backend = RedisBackend.from_url(url, timeout=5.0)
    await backend.load_scripts()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    window = QuotaWindow("day")
    cells = units = slots = admitted = 0
    try:
        for _ in range(attempts):
            cells += (await backend.gcra("shared", RATE, now)).allowed
            units += (await backend.quota_consume("shared", QUOTA_LIMIT, window, now)).allowed
            slots += (await backend.slot_acquire("shared", SLOT_LIMIT, 600, now)).acquired
            admitted += (await backend.admit(ADMIT_CHECKS, [], [], now)).allowed
    finally:
        await backend.aclose()
    return cells, units, slots, admitted


if __name__ == "__main__":
    url, attempts, now = sys.argv[1:4]
    print(*asyncio.run(hammer(url, int(attempts), float(now))))

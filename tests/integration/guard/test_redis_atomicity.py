"""Several real OS processes on one key never admit more than the limit together."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from tests.integration.guard.ratelimit_hammer import (
    ADMIT_ORG,
    ADMIT_USER,
    QUOTA_LIMIT,
    RATE,
    SLOT_LIMIT,
)
from tests.support.services import redis_url

from keel.guard.ratelimit.gcra import GcraDecision
from keel.guard.ratelimit.redis_backend import RedisBackend

pytestmark = pytest.mark.redis

HAMMER = Path(__file__).with_name("ratelimit_hammer.py")
DB = 2
PROCESSES = 4
ATTEMPTS = 100  # each; 400 in all against limits of 50, 37 and 5


@pytest.fixture
def url() -> str:
    url = redis_url(DB)
    client = Redis.from_url(url)
    client.flushdb()
    yield url  # type: ignore[misc]
    client.flushdb()
    client.close()


def test_processes_together_admit_exactly_the_limit(url: str) -> None:
    now = 1_800_000_000.0
    command = [sys.executable, str(HAMMER), url, str(ATTEMPTS), str(now)]
    workers = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[3],
        )
        for _ in range(PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        admitted = []
        for worker in workers:
            out, err = worker.communicate("go\n", timeout=60)
            assert worker.returncode == 0, err
            admitted.append(tuple(int(count) for count in out.split()))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
    # Together exactly the limits: 50 GCRA cells, 37 quota units, 5 slots, and
    # 30 admissions of user+org (the org's burst) ...
    totals = tuple(sum(column) for column in zip(*admitted, strict=True))
    assert totals == (RATE.burst, QUOTA_LIMIT, SLOT_LIMIT, ADMIT_ORG.burst)
    # ... which spent exactly 30 of the user's 45: the org's 370 refusals spent none.
    assert asyncio.run(peek(url, "admit-user")).remaining == ADMIT_USER.burst - ADMIT_ORG.burst


async def peek(url: str, key: str) -> GcraDecision:
    backend = RedisBackend.from_url(url)
    try:
        return await backend.gcra(key, ADMIT_USER, 1_800_000_000.0, 0)
    finally:
        await backend.aclose()

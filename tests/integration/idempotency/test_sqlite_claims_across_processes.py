"""Processes racing for the same keys on one SQLite file: exactly one claim per key.

Each process does what a keyed request does before it runs: the key's read
(on its event loop, ``OneHopConnection.read_now``), then the claim's insert
straight away when the read found no row. Writer turns queue the writers of
one process only; across processes the inserts meet at SQLite's lock and the
primary key, and ``ON CONFLICT DO NOTHING`` must leave exactly one winner.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

PROCESSES = 4
KEYS = 40

RACER = """
import asyncio, json, sys, time
from datetime import UTC, datetime
from keel.db.engine import Database
from keel.guard.idempotency import store_for
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.store import ClaimResult

async def race(url, name, start, keys):
    database = Database(url)
    store = store_for(database, lease_seconds=60, retention_seconds=3600)
    now = datetime(2026, 12, 3, tzinfo=UTC)
    await store.lookup(KeyRef("u", "o", "op", "warm-up"), now=now)  # connections open
    await asyncio.sleep(max(0.0, start - time.time()))
    results = {}
    for i in range(keys):
        ref = KeyRef("u", "o", "op", f"key-{i}")
        seen = await store.lookup(ref, now=now)
        absent = seen is not None and seen.result is ClaimResult.ABSENT
        claim = await store.claim(ref, owner=name, fingerprint="fp", now=now, seen_absent=absent)
        results[ref.key] = claim.result.value
    await database.dispose()
    print(json.dumps(results))

asyncio.run(race(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


@pytest.mark.parametrize("backend", ["sqlite"])
def test_processes_racing_for_the_same_keys_make_exactly_one_claim_each(
    database_url: str,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start = time.time() + 3.0  # every process started and connected by then
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, database_url, f"p{n}", str(start), str(KEYS)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    outcomes = []
    for racer in racers:
        out, _ = racer.communicate(timeout=120)
        assert racer.returncode == 0
        outcomes.append(json.loads(out))
    for i in range(KEYS):
        results = Counter(outcome[f"key-{i}"] for outcome in outcomes)
        assert results == {"claimed": 1, "in_flight": PROCESSES - 1}, (i, results)

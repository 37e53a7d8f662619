"""What the wiring of issue 8 costs per call, in the healthy (CLOSED) state.

Run: ``.venv/bin/python bench/bench_resilience_wiring.py``

A. The rate limiter's Redis fallback asks its breaker ``allow()`` / ``record_success()``
   around every Redis decision. Compared: the built-in ``Cooldown`` it shipped with
   (one failure opens it, nothing else) against ``BreakerGate`` over the full
   ``CircuitBreaker`` (rates over a window, probes, shared state, a context variable so
   concurrent requests never mix permits). Per-call overhead over a bare loop.
B. File storage through ``ResilientBlobStore`` (timeout, bulkhead, breaker, retry
   policy, metrics) against the bare ``LocalDirectoryStore``: ``exists`` on a real file,
   which is a thread hop (``asyncio.to_thread``) plus a ``stat`` — the cheapest real
   storage call, so the most unfavourable ratio for the wrapper.

Several rounds, interleaved; medians.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from keel.guard.ratelimit.fallback import Cooldown
from keel.resilience import BreakerGate, CircuitBreaker, Dependency, ResilienceMetrics
from keel.resilience.wiring import STORAGE, dependency_configs
from keel.settings import Settings
from keel.storage import LocalDirectoryStore, ResilientBlobStore

N_GATE = 200_000
N_STORAGE = 3_000
ROUNDS = 7


def gate_rounds() -> tuple[float, float]:
    cooldown = Cooldown(5.0)
    breaker = CircuitBreaker("redis", metrics=ResilienceMetrics(CollectorRegistry()))
    gate = BreakerGate(breaker)

    def bare() -> float:
        start = time.perf_counter()
        for _ in range(N_GATE):
            pass
        return time.perf_counter() - start

    def with_cooldown() -> float:
        start = time.perf_counter()
        for _ in range(N_GATE):
            if cooldown.allow():
                cooldown.record_success()
        return time.perf_counter() - start

    def with_gate() -> float:
        start = time.perf_counter()
        for _ in range(N_GATE):
            if gate.allow():
                gate.record_success()
        return time.perf_counter() - start

    cooldowns, gates = [], []
    for _ in range(ROUNDS):
        floor = bare()
        cooldowns.append((with_cooldown() - floor) / N_GATE * 1e9)
        gates.append((with_gate() - floor) / N_GATE * 1e9)
    return statistics.median(cooldowns), statistics.median(gates)


async def storage_rounds() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as root:
        bare_store = LocalDirectoryStore(Path(root))
        writer = await bare_store.begin_write("bench")
        await writer.write(b"x" * 1024)
        key = (await writer.commit()).key
        config = next(c for c in dependency_configs(Settings()) if c.name == STORAGE)
        dependency = Dependency(config, metrics=ResilienceMetrics(CollectorRegistry()))
        wrapped = ResilientBlobStore(bare_store, dependency)

        async def run(store: LocalDirectoryStore | ResilientBlobStore) -> float:
            start = time.perf_counter()
            for _ in range(N_STORAGE):
                await store.exists(key)
            return (time.perf_counter() - start) / N_STORAGE * 1e6

        bares, wrappeds = [], []
        for _ in range(ROUNDS):
            bares.append(await run(bare_store))
            wrappeds.append(await run(wrapped))
        return statistics.median(bares), statistics.median(wrappeds)


def main() -> None:
    cooldown, gate = gate_rounds()
    print(f"A. limiter breaker per call: Cooldown {cooldown:.0f} ns, BreakerGate {gate:.0f} ns")
    print(f"   extra per Redis decision: {gate - cooldown:.0f} ns")
    bare, wrapped = asyncio.run(storage_rounds())
    print(
        f"B. storage exists(): bare {bare:.1f} us, resilient {wrapped:.1f} us, "
        f"overhead {wrapped - bare:.1f} us ({(wrapped / bare - 1) * 100:.0f} %)"
    )


if __name__ == "__main__":
    main()

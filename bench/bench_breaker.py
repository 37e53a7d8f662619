"""Per-call overhead of Keel's circuit breaker in the CLOSED state, against pybreaker's.

Run: ``.venv/bin/python bench/bench_breaker.py``

pybreaker's async path (``call_async``) needs tornado, which Keel does not ship, and its
decorator on an ``async def`` only times the creation of the coroutine (it never sees the
outcome), so it is not a fair opponent. Two comparisons are made instead, both in one run:

A. *sync against sync* (the fairest): pybreaker's ``CircuitBreaker.call(noop)`` against
   Keel's bookkeeping around the same ``noop`` — ``acquire_permission()``, time the call,
   ``on_success()`` — which is everything ``CircuitBreaker.call`` does besides awaiting.
B. *whole path*: Keel's ``await breaker.call(async_noop)`` against bare
   ``await async_noop()``, i.e. including the extra coroutine frame of the async wrapper,
   set against pybreaker's sync overhead (A). This is the conservative figure for Keel.

Overhead = (time with breaker − time of the bare call) / N; several rounds; the median.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import pybreaker
from prometheus_client import CollectorRegistry

from keel.resilience import BreakerConfig, CircuitBreaker, ResilienceMetrics

N = 200_000
ROUNDS = 7


def noop() -> int:
    return 1


async def async_noop() -> int:
    return 1


def make_keel() -> CircuitBreaker:
    # A large window so nothing is ever evicted twice in a row; CLOSED all along.
    return CircuitBreaker(
        "bench",
        BreakerConfig(window_size=100, minimum_number_of_calls=100),
        metrics=ResilienceMetrics(CollectorRegistry()),
    )


def sync_bare() -> float:
    start = time.perf_counter()
    for _ in range(N):
        noop()
    return time.perf_counter() - start


def sync_pybreaker(breaker: pybreaker.CircuitBreaker) -> float:
    call = breaker.call
    start = time.perf_counter()
    for _ in range(N):
        call(noop)
    return time.perf_counter() - start


def sync_keel(breaker: CircuitBreaker) -> float:
    acquire, on_success, mono = breaker.acquire_permission, breaker.on_success, time.monotonic
    start = time.perf_counter()
    for _ in range(N):
        token = acquire()
        began = mono()
        noop()
        end = mono()
        on_success(token, end - began, end)
    return time.perf_counter() - start


async def async_bare() -> float:
    start = time.perf_counter()
    for _ in range(N):
        await async_noop()
    return time.perf_counter() - start


async def passthrough(fn: Callable[[], Awaitable[int]]) -> int:
    return await fn()


async def async_floor() -> float:
    """The cost of any async wrapper at all: one more coroutine frame, nothing inside."""
    start = time.perf_counter()
    for _ in range(N):
        await passthrough(async_noop)
    return time.perf_counter() - start


async def async_keel(breaker: CircuitBreaker) -> float:
    call = breaker.call
    start = time.perf_counter()
    for _ in range(N):
        await call(async_noop)
    return time.perf_counter() - start


def main() -> None:
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    keel_sync = make_keel()
    keel_async = make_keel()
    pyb_over: list[float] = []
    keel_sync_over: list[float] = []
    keel_async_over: list[float] = []
    floor_over: list[float] = []
    loop = asyncio.new_event_loop()
    try:
        for _ in range(ROUNDS):
            bare = sync_bare()
            pyb_over.append((sync_pybreaker(pyb) - bare) / N)
            bare = sync_bare()
            keel_sync_over.append((sync_keel(keel_sync) - bare) / N)
            abare = loop.run_until_complete(async_bare())
            keel_async_over.append((loop.run_until_complete(async_keel(keel_async)) - abare) / N)
            abare = loop.run_until_complete(async_bare())
            floor_over.append((loop.run_until_complete(async_floor()) - abare) / N)
    finally:
        loop.close()
    p = statistics.median(pyb_over) * 1e9
    ks = statistics.median(keel_sync_over) * 1e9
    ka = statistics.median(keel_async_over) * 1e9
    fl = statistics.median(floor_over) * 1e9
    print(f"N={N} rounds={ROUNDS} (median of per-round overhead per call)")
    print(f"pybreaker 1.x sync call           : {p:8.1f} ns")
    print(f"keel sync bookkeeping (A)         : {ks:8.1f} ns   ratio keel/pybreaker = {ks / p:.3f}")
    print(f"keel async call, whole path (B)   : {ka:8.1f} ns   ratio keel/pybreaker = {ka / p:.3f}")
    print(f"  of which any async wrapper costs : {fl:8.1f} ns   (B minus it = {ka - fl:.1f} ns, "
          f"ratio {(ka - fl) / p:.3f})")
    target = p / 3
    for label, value in (("A", ks), ("B", ka)):
        verdict = "meets" if value <= target else "MISSES"
        print(f"{label}: {verdict} the target (<= 1/3 of pybreaker = {target:.1f} ns)")
    if keel_sync.state.value != "closed" or keel_async.state.value != "closed":
        raise SystemExit("a Keel breaker left CLOSED: the measurement is void")


if __name__ == "__main__":
    main()

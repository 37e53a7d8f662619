"""MemoryBackend's own promise: memory stays bounded as keys go idle."""

from __future__ import annotations

from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.quota import QuotaWindow

NOW = 1_800_000_000.0
RATE = Rate(limit=10, period=10, burst=2)


async def test_idle_keys_are_swept_once_their_state_means_nothing() -> None:
    backend = MemoryBackend()
    for i in range(500):
        await backend.gcra(f"g{i}", RATE, NOW)
        await backend.quota_consume(f"q{i}", 5, QuotaWindow("hour"), NOW)
        await backend.slot_acquire(f"s{i}", 1, 30, NOW)
    assert len(backend) == 1500
    # One second later only the GCRA keys have rested (one cell per second).
    assert backend.sweep(NOW + 1) == 500
    # Past the lease and the hour, nothing is left.
    assert backend.sweep(NOW + 3600) == 1000
    assert len(backend) == 0


async def test_sweeping_happens_on_its_own_as_operations_flow() -> None:
    backend = MemoryBackend()
    for i in range(5000):
        await backend.gcra(f"k{i}", RATE, NOW + i)
    # Each key rests after 1 s; periodic sweeps keep only recent ones.
    assert len(backend) < 2100


async def test_hard_cap_evicts_oldest_first() -> None:
    backend = MemoryBackend(max_keys=100)
    for i in range(300):
        await backend.gcra(f"k{i}", RATE, NOW)
    assert len(backend) <= 100
    # The newest key kept its state.
    assert (await backend.gcra("k299", RATE, NOW)).remaining == 0


async def test_expired_quota_counter_reads_as_zero_before_any_sweep() -> None:
    backend = MemoryBackend()
    window = QuotaWindow("hour")
    await backend.quota_consume("q", 1, window, NOW)
    assert not (await backend.quota_check("q", 1, window, NOW)).allowed
    assert (await backend.quota_check("q", 1, window, NOW + 3600)).allowed

"""One contract, every backend: GCRA, quotas, slots and expiry behave the same.

Time is made up (``now`` is an argument); nothing sleeps.
"""

from __future__ import annotations

import math

import pytest

from keel.guard.ratelimit.backend import LimiterBackend
from keel.guard.ratelimit.gcra import Rate, gcra
from keel.guard.ratelimit.quota import QuotaWindow

NOW = 1_800_000_000.123456
RATE = Rate(limit=60, period=60, burst=5)
DAY = QuotaWindow("day", "Europe/London")


async def test_gcra_admits_the_burst_then_refuses(backend: LimiterBackend) -> None:
    decisions = [await backend.gcra("k", RATE, NOW) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert decisions[-1].retry_after == pytest.approx(1.0)


async def test_gcra_matches_the_pure_arithmetic_exactly(backend: LimiterBackend) -> None:
    tat: float | None = None
    now = NOW
    for step in range(40):
        now += (step % 7) * 0.37
        n = 1 + step % 3
        expected = gcra(tat, now, RATE, n)
        got = await backend.gcra("k", RATE, now, n)
        assert got == expected
        if expected.allowed:
            tat = expected.tat


async def test_gcra_retry_after_is_exact(backend: LimiterBackend) -> None:
    for _ in range(5):
        await backend.gcra("k", RATE, NOW)
    denied = await backend.gcra("k", RATE, NOW + 0.3, 2)
    assert not denied.allowed
    assert (await backend.gcra("k", RATE, NOW + 0.3 + denied.retry_after, 2)).allowed


async def test_gcra_peek_consumes_nothing(backend: LimiterBackend) -> None:
    await backend.gcra("k", RATE, NOW)
    for _ in range(3):
        peek = await backend.gcra("k", RATE, NOW, 0)
        assert (peek.allowed, peek.remaining) == (True, 4)


async def test_gcra_cost_above_burst_never_fits(backend: LimiterBackend) -> None:
    decision = await backend.gcra("k", RATE, NOW, 6)
    assert not decision.allowed
    assert math.isinf(decision.retry_after)
    assert (await backend.gcra("k", RATE, NOW)).remaining == 4


async def test_gcra_survives_a_clock_jumping_backwards(backend: LimiterBackend) -> None:
    for _ in range(5):
        await backend.gcra("k", RATE, NOW)
    back = await backend.gcra("k", RATE, NOW - 600)
    assert not back.allowed
    assert back.retry_after == pytest.approx(1.0)
    assert (await backend.gcra("k", RATE, NOW - 599)).allowed


async def test_gcra_keys_are_independent(backend: LimiterBackend) -> None:
    for _ in range(5):
        await backend.gcra("a", RATE, NOW)
    assert (await backend.gcra("b", RATE, NOW)).allowed


async def test_gcra_state_is_forgotten_once_rested(backend: LimiterBackend) -> None:
    for _ in range(5):
        await backend.gcra("k", RATE, NOW)
    assert (await backend.gcra("k", RATE, NOW + 5, 0)).remaining == 5


async def test_quota_check_peeks_and_consume_counts(backend: LimiterBackend) -> None:
    for _ in range(3):
        check = await backend.quota_check("q", 2, DAY, NOW)
        assert (check.allowed, check.used) == (True, 0)
    first = await backend.quota_consume("q", 2, DAY, NOW)
    second = await backend.quota_consume("q", 2, DAY, NOW)
    third = await backend.quota_consume("q", 2, DAY, NOW)
    assert [(d.allowed, d.used) for d in (first, second, third)] == [
        (True, 1),
        (True, 2),
        (False, 2),
    ]
    assert third.retry_after == pytest.approx(third.reset_after)
    assert not (await backend.quota_check("q", 2, DAY, NOW)).allowed


async def test_quota_consume_of_several_fits_or_not_as_a_whole(backend: LimiterBackend) -> None:
    assert (await backend.quota_consume("q", 5, DAY, NOW, 3)).allowed
    refused = await backend.quota_consume("q", 5, DAY, NOW, 3)
    assert (refused.allowed, refused.used) == (False, 3)
    assert (await backend.quota_consume("q", 5, DAY, NOW, 2)).used == 5


async def test_quota_overdraft_records_past_the_limit(backend: LimiterBackend) -> None:
    for _ in range(3):
        decision = await backend.quota_consume("q", 2, DAY, NOW, overdraft=True)
    assert (decision.allowed, decision.used, decision.remaining) == (True, 3, 0)


async def test_quota_refund_never_goes_below_zero(backend: LimiterBackend) -> None:
    await backend.quota_consume("q", 5, DAY, NOW, 2)
    await backend.quota_refund("q", DAY, NOW, 1)
    assert (await backend.quota_check("q", 5, DAY, NOW)).used == 1
    await backend.quota_refund("q", DAY, NOW, 10)
    assert (await backend.quota_check("q", 5, DAY, NOW)).used == 0
    # Refunding a window never counted creates nothing.
    await backend.quota_refund("never", DAY, NOW, 1)
    assert (await backend.quota_check("never", 5, DAY, NOW)).used == 0


async def test_quota_resets_with_the_window_and_refunds_hit_their_own(
    backend: LimiterBackend,
) -> None:
    start, end = DAY.bounds(NOW)
    await backend.quota_consume("q", 1, DAY, NOW)
    assert not (await backend.quota_check("q", 1, DAY, end - 0.001)).allowed
    assert (await backend.quota_consume("q", 1, DAY, end)).allowed
    # A refund of yesterday's consume leaves today's count alone.
    await backend.quota_refund("q", DAY, NOW, 1)
    assert (await backend.quota_check("q", 1, DAY, end + 1)).used == 1
    assert (await backend.quota_check("q", 1, DAY, start)).used == 0


async def test_slots_up_to_the_limit_then_refuse(backend: LimiterBackend) -> None:
    taken = [await backend.slot_acquire("s", 2, 30, NOW + i) for i in range(3)]
    assert [t.acquired for t in taken] == [True, True, False]
    assert [t.in_flight for t in taken] == [1, 2, 2]
    # The earliest lease runs out 30 s after NOW; the refusal came at NOW + 2.
    assert taken[2].retry_after == pytest.approx(28.0)
    assert taken[2].slot_id is None


async def test_released_slot_is_free_again(backend: LimiterBackend) -> None:
    first = await backend.slot_acquire("s", 1, 30, NOW)
    assert first.slot_id is not None
    assert not (await backend.slot_acquire("s", 1, 30, NOW)).acquired
    await backend.slot_release("s", first.slot_id)
    await backend.slot_release("s", first.slot_id)  # twice is harmless
    assert (await backend.slot_acquire("s", 1, 30, NOW)).acquired


async def test_expired_lease_returns_the_slot_of_a_crashed_holder(
    backend: LimiterBackend,
) -> None:
    await backend.slot_acquire("s", 1, 10, NOW)  # the holder "crashes": never releases
    assert not (await backend.slot_acquire("s", 1, 10, NOW + 9.9)).acquired
    late = await backend.slot_acquire("s", 1, 10, NOW + 10)
    assert (late.acquired, late.in_flight) == (True, 1)


async def test_slot_ids_are_unique(backend: LimiterBackend) -> None:
    ids = {(await backend.slot_acquire("s", 50, 30, NOW)).slot_id for _ in range(50)}
    assert len(ids) == 50

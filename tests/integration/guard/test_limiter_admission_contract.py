"""One request, every limit, all or nothing — the same on every backend.

``admit`` spends rate cells, reserves quota units and takes slots only when
every check fits; a refusal by any one of them leaves all the others exactly
as they were. Concurrent admissions never pass a quota together, and a
released unit comes back exactly once.
Time is made up; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from keel.guard.ratelimit.backend import LimiterBackend, QuotaCheck, RateCheck, SlotClaim
from keel.guard.ratelimit.gcra import Rate, gcra
from keel.guard.ratelimit.limiter import RateLimiter, RequestContext
from keel.guard.ratelimit.policy import parse_policy
from keel.guard.ratelimit.quota import QuotaWindow

NOW = 1_800_000_000.123456
USER = Rate(limit=60, period=60, burst=5)
ORG = Rate(limit=60, period=60, burst=2)
DAY = QuotaWindow("day", "Europe/London")
DAY_UTC = QuotaWindow("day")
QUOTA_POLICY = parse_policy(
    """
version = 1

[[limits]]
name = "things-daily"
key = "user"
applies_to = ["things.create"]
algorithm = "quota"
limit = 3
window = "day"
"""
)


async def remaining(backend: LimiterBackend, key: str, rate: Rate, now: float = NOW) -> int:
    return (await backend.gcra(key, rate, now, 0)).remaining


async def test_admitted_spends_a_cell_of_every_rate_limit(backend: LimiterBackend) -> None:
    admission = await backend.admit([RateCheck("u", USER), RateCheck("o", ORG)], [], [], NOW)
    assert admission.allowed
    assert [r.remaining for r in admission.rates] == [4, 1]
    assert (await remaining(backend, "u", USER), await remaining(backend, "o", ORG)) == (4, 1)


async def test_a_refusal_by_the_second_limit_spends_nothing_of_the_first(
    backend: LimiterBackend,
) -> None:
    checks = [RateCheck("u", USER), RateCheck("o", ORG)]
    outcomes = [await backend.admit(checks, [], [], NOW) for _ in range(4)]
    assert [a.allowed for a in outcomes] == [True, True, False, False]
    # Two admissions spent two user cells; the two refusals by the org spent none.
    assert await remaining(backend, "u", USER) == 3
    refused = outcomes[-1]
    user, org = refused.rates
    assert (user.allowed, user.remaining) == (True, 3)  # a peek: what is really left
    assert (org.allowed, org.remaining) == (False, 0)
    assert org.retry_after == pytest.approx(1.0)


async def test_a_full_quota_refuses_and_spends_no_rate_cell(backend: LimiterBackend) -> None:
    await backend.quota_consume("q", 1, DAY, NOW)
    admission = await backend.admit([RateCheck("u", USER)], [QuotaCheck("q", 1, DAY)], [], NOW)
    assert not admission.allowed
    [quota] = admission.quotas
    assert (quota.allowed, quota.used) == (False, 1)
    assert await remaining(backend, "u", USER) == 5


async def test_an_admission_reserves_its_quota_units(backend: LimiterBackend) -> None:
    outcomes = [await backend.admit([], [QuotaCheck("q", 2, DAY)], [], NOW) for _ in range(3)]
    assert [a.allowed for a in outcomes] == [True, True, False]
    # Read after the reservation: the 2nd of 2 leaves none.
    assert [a.quotas[0].used for a in outcomes] == [1, 2, 2]
    assert [a.quotas[0].remaining for a in outcomes] == [1, 0, 0]
    assert (await backend.quota_check("q", 2, DAY, NOW)).used == 2


async def test_concurrent_admissions_never_pass_a_quota(backend: LimiterBackend) -> None:
    checks = [QuotaCheck("q", 10, DAY)]
    outcomes = await asyncio.gather(*(backend.admit([], checks, [], NOW) for _ in range(30)))
    assert sum(a.allowed for a in outcomes) == 10
    # Every admitted reading is a distinct count: no two requests shared a unit.
    assert sorted(a.quotas[0].used for a in outcomes if a.allowed) == list(range(1, 11))
    assert (await backend.quota_check("q", 10, DAY, NOW)).used == 10


async def test_a_refused_admission_reserves_nothing(backend: LimiterBackend) -> None:
    spent = RateCheck("u", Rate(60, 60, 1))
    assert (await backend.admit([spent], [QuotaCheck("q", 5, DAY)], [], NOW)).allowed
    refused = await backend.admit([spent], [QuotaCheck("q", 5, DAY)], [], NOW)
    assert not refused.allowed
    assert (refused.quotas[0].allowed, refused.quotas[0].used) == (True, 1)  # as it stands
    assert (await backend.quota_check("q", 5, DAY, NOW)).used == 1


async def test_a_released_unit_can_be_reserved_again(backend: LimiterBackend) -> None:
    checks = [QuotaCheck("q", 10, DAY)]
    for _ in range(10):
        assert (await backend.admit([], checks, [], NOW)).allowed
    assert not (await backend.admit([], checks, [], NOW)).allowed
    await backend.quota_refund("q", DAY, NOW, 1)  # that request failed: its unit comes back
    assert (await backend.admit([], checks, [], NOW + 1)).allowed
    assert not (await backend.admit([], checks, [], NOW + 1)).allowed


async def test_a_reservation_is_released_once_however_often_it_is_asked(
    backend: LimiterBackend,
) -> None:
    limiter = RateLimiter(backend)
    context = RequestContext(operation="things.create", user_id="u1")
    decisions = [await limiter.decide(QUOTA_POLICY.limits, context, NOW) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    reservation = decisions[0].reservation
    assert reservation is not None
    # Concurrent and repeated releases of one reservation give back one unit.
    released = await asyncio.gather(*(reservation.release() for _ in range(5)))
    assert released.count(True) == 1
    assert not await reservation.release()
    key = "things-daily:user:u1"
    assert (await backend.quota_check(key, 3, DAY_UTC, NOW)).used == 2
    kept = decisions[1].reservation
    assert kept is not None
    assert kept.keep()
    assert not await kept.release()  # a kept unit stays counted
    assert (await backend.quota_check(key, 3, DAY_UTC, NOW)).used == 2


async def test_a_full_slot_refuses_and_spends_nothing(backend: LimiterBackend) -> None:
    holder = await backend.slot_acquire("s", 1, 30, NOW)
    assert holder.acquired
    claims = [SlotClaim("free", 5, 30), SlotClaim("s", 1, 30)]
    admission = await backend.admit([RateCheck("u", USER)], [], claims, NOW + 10)
    assert not admission.allowed
    free, full = admission.slots
    assert (free.acquired, free.slot_id, free.in_flight) == (False, None, 0)
    assert (full.acquired, full.in_flight) == (False, 1)
    assert full.retry_after == pytest.approx(20.0)
    assert await remaining(backend, "u", USER, NOW + 10) == 5
    # Nothing was taken on the free key either: its whole limit is still there.
    for _ in range(5):
        assert (await backend.slot_acquire("free", 5, 30, NOW + 10)).acquired


async def test_admitted_slots_are_taken_and_released_one_by_one(
    backend: LimiterBackend,
) -> None:
    claims = [SlotClaim("user", 1, 30), SlotClaim("org", 2, 30)]
    first = await backend.admit([], [], claims, NOW)
    assert first.allowed
    assert [(s.acquired, s.in_flight) for s in first.slots] == [(True, 1), (True, 1)]
    assert not (await backend.admit([], [], claims, NOW)).allowed  # the user's one slot is held
    user_slot = first.slots[0].slot_id
    assert user_slot is not None
    await backend.slot_release("user", user_slot)
    second = await backend.admit([], [], claims, NOW)
    assert second.allowed
    assert second.slots[1].in_flight == 2
    assert len({first.slots[1].slot_id, second.slots[0].slot_id, second.slots[1].slot_id}) == 3


async def test_admission_readings_match_the_pure_arithmetic(backend: LimiterBackend) -> None:
    tats: dict[str, float | None] = {"u": None, "o": None}
    now = NOW
    for step in range(30):
        now += (step % 5) * 0.45
        n = 1 + step % 2
        expected = {key: gcra(tats[key], now, rate, n) for key, rate in (("u", USER), ("o", ORG))}
        admitted = all(d.allowed for d in expected.values())
        got = await backend.admit([RateCheck("u", USER), RateCheck("o", ORG)], [], [], now, n)
        assert got.allowed is admitted
        for (key, rate), reading in zip((("u", USER), ("o", ORG)), got.rates, strict=True):
            want = expected[key]
            if admitted:
                tats[key] = want.tat
            elif want.allowed:
                want = gcra(tats[key], now, rate, 0)
            assert reading == want


async def test_a_cost_above_a_burst_refuses_everything(backend: LimiterBackend) -> None:
    admission = await backend.admit([RateCheck("u", USER), RateCheck("o", ORG)], [], [], NOW, 3)
    assert not admission.allowed
    assert math.isinf(admission.rates[1].retry_after)
    assert await remaining(backend, "u", USER) == 5


async def test_a_refusal_after_a_backwards_clock_still_lets_the_key_recover(
    backend: LimiterBackend,
) -> None:
    checks = [RateCheck("u", USER), RateCheck("o", ORG)]
    await backend.admit(checks, [], [], NOW)
    await backend.admit(checks, [], [], NOW)
    refused = await backend.admit(checks, [], [], NOW - 600)
    assert not refused.allowed
    assert refused.rates[1].retry_after == pytest.approx(1.0)
    assert (await backend.admit(checks, [], [], NOW - 599)).allowed


async def test_nothing_to_check_is_admitted(backend: LimiterBackend) -> None:
    admission = await backend.admit([], [], [], NOW)
    assert admission == (True, (), (), ())

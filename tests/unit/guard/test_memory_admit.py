"""MemoryBackend.admit decides a request's every limit at once, all or nothing, with
gcra() and quota_decision(). These properties hold it to the pure functions:
over random requests and made-up clocks — bursts, refusals, peeks, a clock that jumps
backwards — every reading, every stored TAT and every quota count (an admission
reserves its units) is what the reference arithmetic gives."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.guard.ratelimit.backend import Admission
from keel.guard.ratelimit.gcra import GcraDecision, Rate, gcra
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.quota import QuotaDecision, QuotaWindow, counter_key, quota_decision

NOW = 1_800_000_000.0
RATES = [Rate(7, 3, 3), Rate(60, 60, 1), Rate(1000, 1, 50)]
WINDOW = QuotaWindow("hour", "Europe/London")

request = st.tuples(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(RATES)), max_size=3),
    st.floats(-400.0, 30.0, allow_nan=False),  # time step: mostly forwards, sometimes far back
    st.integers(0, 4),  # n
    st.integers(0, 3),  # quota limit
)


def reference(
    tats: dict[str, float],
    used: dict[str, int],
    rates: list[tuple[str, Rate]],
    limit: int,
    now: float,
    n: int,
) -> tuple[bool, list[GcraDecision], QuotaDecision]:
    """admit() in terms of gcra() and quota_decision(), updating the shadow state.

    An admission reserves the quota's ``n`` units: the count goes up with the
    cells, and the reading is the one after the reservation."""
    decisions = [gcra(tats.get(key), now, rate, n) for key, rate in rates]
    bounds = WINDOW.bounds(now)
    ckey = counter_key("q", bounds)
    quota = quota_decision(used.get(ckey, 0), limit, n, now, bounds)
    allowed = all(d.allowed for d in decisions) and quota.allowed
    if allowed:
        if n > 0:
            for (key, _), decision in zip(rates, decisions, strict=True):
                tats[key] = decision.tat
            used[ckey] = used.get(ckey, 0) + n
        return True, decisions, quota._replace(used=quota.used + n)
    readings = []
    for (key, rate), decision in zip(rates, decisions, strict=True):
        tat = tats.get(key)
        reading = gcra(tat, now, rate, 0) if decision.allowed else decision
        if tat is not None and reading.tat < tat:
            tats[key] = reading.tat  # the backwards-clock clamp
        readings.append(reading)
    return False, readings, quota


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(request, min_size=1, max_size=25))
def test_admit_equals_the_reference_arithmetic(
    requests: list[tuple[list[tuple[str, Rate]], float, int, int]],
) -> None:
    backend = MemoryBackend()
    tats: dict[str, float] = {}
    used: dict[str, int] = {}
    now = NOW
    for checks, step, n, limit in requests:
        rates = list({key: (key, rate) for key, rate in checks}.values())  # distinct keys
        now += step
        admission: Admission = asyncio.run(backend.admit(rates, [("q", limit, WINDOW)], [], now, n))
        allowed, readings, quota = reference(tats, used, rates, limit, now, n)
        assert admission.allowed == allowed
        assert list(admission.rates) == readings
        assert admission.quotas == (quota,)
        for key, _ in rates:
            assert backend._tats.get(key) == tats.get(key)
        for ckey, count in used.items():
            assert backend._counts[ckey][0] == count


def test_a_negative_cost_is_refused_even_with_nothing_to_check() -> None:
    with pytest.raises(ValueError, match="negative"):
        asyncio.run(MemoryBackend().admit([], [], [], NOW, -1))


def test_admit_reads_each_window_own_count_across_memo_misses() -> None:
    """admit locates windows through QuotaWindow's memo; crossing a window edge (a memo miss),
    forwards and back, must land on that window's own counter, as quota_check does."""
    backend = MemoryBackend()
    window = QuotaWindow("hour", "Europe/London")  # fresh: its memo starts empty
    start, end = window.bounds(NOW + 10)

    async def scenario() -> list[int]:
        await backend.quota_consume("q", 5, window, start + 10, 2)
        readings = []
        for now in (start + 20, end + 1, start + 30, end - 0.5, end):
            admission = await backend.admit([], [("q", 5, window)], [], now, 0)  # a peek
            check = await backend.quota_check("q", 5, window, now, 0)
            assert admission.quotas == (check,)
            readings.append(admission.quotas[0].used)
        return readings

    assert asyncio.run(scenario()) == [2, 0, 2, 2, 0]


def test_admit_refuses_a_full_quota_with_the_reference_reading() -> None:
    backend = MemoryBackend()
    window = QuotaWindow("day")

    async def scenario() -> Admission:
        await backend.quota_consume("q", 3, window, NOW, 3)
        return await backend.admit([("r", RATES[0])], [("q", 3, window)], [], NOW + 1)

    admission = asyncio.run(scenario())
    assert not admission.allowed
    assert admission.quotas == (quota_decision(3, 3, 1, NOW + 1, window.bounds(NOW + 1)),)
    assert admission.rates == (gcra(None, NOW + 1, RATES[0], 0),)  # nothing spent
    assert "r" not in backend._tats


def test_a_refusal_by_a_rate_reserves_nothing_of_a_quota_that_fitted() -> None:
    backend = MemoryBackend()
    window = QuotaWindow("day")
    rate = Rate(60, 60, 1)

    async def scenario() -> tuple[Admission, Admission]:
        first = await backend.admit([("r", rate)], [("q", 3, window)], [], NOW)
        second = await backend.admit([("r", rate)], [("q", 3, window)], [], NOW)
        return first, second

    first, second = asyncio.run(scenario())
    bounds = window.bounds(NOW)
    assert first.allowed
    assert first.quotas == (quota_decision(0, 3, 1, NOW, bounds)._replace(used=1),)
    assert not second.allowed  # the rate's one cell is spent
    assert second.quotas == (quota_decision(1, 3, 1, NOW, bounds),)  # fits, and reads as is
    assert backend._counts[counter_key("q", bounds)][0] == 1


def test_a_refusal_by_a_slot_reserves_nothing_either() -> None:
    backend = MemoryBackend()
    window = QuotaWindow("day")

    async def scenario() -> Admission:
        await backend.slot_acquire("s", 1, 30, NOW)
        return await backend.admit([], [("q", 3, window)], [("s", 1, 30.0)], NOW)

    refused = asyncio.run(scenario())
    assert not refused.allowed
    assert refused.quotas == (quota_decision(0, 3, 1, NOW, window.bounds(NOW)),)
    assert backend._counts == {}

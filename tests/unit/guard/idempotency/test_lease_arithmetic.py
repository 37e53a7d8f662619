"""Lease arithmetic and the heartbeat against a model of the lease, on a manual clock.

No I/O and no sleeping: the heartbeat's sleep advances the clock, and the
fake store keeps the one number that matters, the end of the lease, refusing a
beat that comes after it (by then a retry may have taken the key over).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import DatabaseUnavailable
from keel.guard.idempotency import Claim, ClaimResult, IdempotencyScope, KeyRef
from keel.guard.idempotency.heartbeat import BEATS_PER_LEASE, heartbeat
from keel.settings import Settings
from keel.testing import ManualClock

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
REF = KeyRef("user-1", "org-1", "POST /v1/evidence", "key-1")
LEASE = Settings().idempotency_lease_seconds


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("locked_until", "now", "expected"),
    [
        (None, 0.0, 1),  # the store gave no lease (it kept changing hands): soon
        (3.0, 0.0, 3),
        (3.0, 0.01, 3),  # rounded up: a client waiting this long arrives after the lease
        (3.0, 0.99, 3),
        (3.0, 1.0, 2),
        (3.0, 2.999, 1),
        (3.0, 3.0, 1),  # at least 1 s, never 0
        (3.0, 10.0, 1),  # the lease already ran out by our clock
        (3.0, -60.0, 63),  # a clock that jumped backwards: the honest remainder
    ],
)
def test_retry_after_is_the_rest_of_the_lease_rounded_up(
    locked_until: float | None, now: float, expected: int
) -> None:
    until = None if locked_until is None else at(locked_until)
    assert Claim(ClaimResult.IN_FLIGHT, locked_until=until).retry_after(at(now)) == expected


def test_the_default_lease_keeps_a_crash_retry_inside_five_seconds() -> None:
    """A crash right after a beat blocks the key one whole lease; the client's first
    retry is told to come back at its end, and that retry must still fit in 5 s."""
    crash_just_after_beat = Claim(ClaimResult.IN_FLIGHT, locked_until=at(LEASE))
    assert crash_just_after_beat.retry_after(at(0)) == math.ceil(LEASE)
    assert math.ceil(LEASE) <= 3  # ≥ 2 s left for the retry itself


class LeaseModel:
    """The claim's lease as the database keeps it; a beat after its end finds it lost."""

    def __init__(self, clock: ManualClock, lease: float, failures: set[int]) -> None:
        self.clock = clock
        self.lease = timedelta(seconds=lease)
        self.locked_until = clock.now() + self.lease
        self.failures = failures  # beat numbers on which the database does not answer
        self.beats = 0
        self.lapsed = False
        self.stop_after = 0

    async def extend(self, ref: KeyRef, *, owner: str, now: datetime) -> bool:
        self.beats += 1
        if self.beats in self.failures:
            raise DatabaseUnavailable("down", retry_after=2)
        if self.locked_until <= now:
            self.lapsed = True
            return False
        self.locked_until = now + self.lease
        return self.beats < self.stop_after


async def run_beats(failures: set[int], beats: int) -> LeaseModel:
    clock = ManualClock(T0)
    store = LeaseModel(clock, LEASE, failures)
    store.stop_after = beats
    keyed = IdempotencyScope(store=store, ref=REF, owner="me", clock=clock)  # type: ignore[arg-type]

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    def later(seconds: float, callback: Callable[[], None]) -> asyncio.Handle:
        clock.advance(seconds)  # the first beat's wait, on the loop's timer
        return asyncio.get_running_loop().call_soon(callback)

    async with heartbeat(keyed, lease_seconds=LEASE, sleep=sleep, later=later):
        for _ in range(20 * beats):
            if store.beats >= beats or store.lapsed:
                break
            await asyncio.sleep(0)
    return store


async def test_a_request_of_many_leases_never_lets_its_claim_lapse() -> None:
    store = await run_beats(failures=set(), beats=10 * BEATS_PER_LEASE)
    assert store.beats == 10 * BEATS_PER_LEASE
    assert not store.lapsed


async def test_single_lost_beats_never_let_the_claim_lapse() -> None:
    store = await run_beats(failures={2, 5, 8, 11}, beats=12)
    assert store.beats == 12
    assert not store.lapsed


async def test_a_database_silent_for_a_whole_lease_costs_the_claim() -> None:
    """Three lost beats in a row is a lease without renewal: the claim is then fair game
    for a retry, and the next beat learns it (the request's completion will roll back)."""
    store = await run_beats(failures={2, 3, 4}, beats=12)
    assert store.lapsed
    assert store.beats == 5


@given(
    remaining=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
def test_a_client_waiting_retry_after_never_arrives_before_the_lease_ends(
    remaining: float,
) -> None:
    now = at(0)
    claim = Claim(ClaimResult.IN_FLIGHT, locked_until=now + timedelta(seconds=remaining))
    wait = claim.retry_after(now)
    assert wait >= 1
    assert now + timedelta(seconds=wait) >= now + timedelta(seconds=remaining)
    assert wait < max(remaining, 0) + 1 + 1e-6  # and not a second later than needed

"""The short lease, its heartbeat and the takeover of a dead claim, on SQLite and
PostgreSQL, over made-up times (issue 14, item 9): nothing sleeps.

With Keel's default lease a crashed request blocks its key for at most one
lease after its last heartbeat; a live one, beating every third of a lease,
never lets its claim lapse; and whatever the timing, of the holder and a
taker exactly one completes.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from keel.db.engine import Database
from keel.db.tables_idempotency import IdempotencyKey
from keel.guard.idempotency import (
    Claim,
    ClaimResult,
    IdempotencyLeaseLost,
    KeyRef,
    StoredResponse,
    sql,
    store_for,
)
from keel.guard.idempotency.heartbeat import BEATS_PER_LEASE
from keel.guard.idempotency.sql import SqlStore
from keel.settings import Settings

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
REF = KeyRef("user-1", "org-1", "POST /v1/recognitions", "key-1")
CREATED = StoredResponse(201, (("content-type", "application/json"),), b'{"id":"r1"}')
LEASE = Settings().idempotency_lease_seconds
BEAT = LEASE / BEATS_PER_LEASE


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(database: Database) -> SqlStore:
    return store_for(database, lease_seconds=LEASE, retention_seconds=3600)


async def complete(store: SqlStore, owner: str, now: datetime) -> None:
    """The completion inside a business transaction that also writes a row of its own
    (a witness row in the same table, so the test needs no other schema)."""
    async with store.database.write() as session:
        await session.execute(
            text(
                "INSERT INTO idempotency_keys (user_id, operation, key, org_id, state, owner, "
                "created_at, locked_until, expires_at) VALUES ('witness', 'op', :key, 'o', "
                "'completed', :owner, :now, :now, :now)"
            ),
            {"key": f"work-of-{owner}", "owner": owner, "now": now},
        )
        await store.complete(session, REF, owner=owner, fingerprint="fp", response=CREATED, now=now)


async def business_rows(store: SqlStore) -> list[str]:
    async with store.database.read() as session:
        found = await session.execute(
            text("SELECT key FROM idempotency_keys WHERE user_id = 'witness' ORDER BY key")
        )
        return [row[0] for row in found]


async def test_the_default_lease_lets_a_retry_run_within_five_seconds_of_a_crash(
    store: SqlStore,
) -> None:
    """A crash just after a beat is the worst case: the key is blocked one lease, and the
    409's Retry-After points the client to the end of it."""
    assert LEASE <= 3
    await store.claim(REF, owner="dead", fingerprint="fp", now=at(0))
    assert await store.extend(REF, owner="dead", now=at(BEAT))  # its last beat; then it died
    died = BEAT
    busy = await store.claim(REF, owner="retry", fingerprint="fp", now=at(died + 0.01))
    assert busy.result is ClaimResult.IN_FLIGHT
    wait = busy.retry_after(at(died + 0.01))
    assert wait == math.ceil(LEASE - 0.01)  # the rest of the lease, rounded up
    retried = await store.claim(REF, owner="retry", fingerprint="fp", now=at(died + 0.01 + wait))
    assert retried.result is ClaimResult.TAKEN_OVER
    assert 0.01 + wait < 5
    await complete(store, "retry", at(died + 0.01 + wait + 0.2))
    assert await business_rows(store) == ["work-of-retry"]


async def test_a_claim_renewed_by_its_heartbeat_is_never_taken_over(
    store: SqlStore,
) -> None:
    """Ten leases of a slow request: retries between beats are refused with the rest of
    the renewed lease, and the slow request completes."""
    await store.claim(REF, owner="slow", fingerprint="fp", now=at(0))
    beats = int(10 * BEATS_PER_LEASE)
    for beat in range(1, beats + 1):
        now = beat * BEAT
        assert await store.extend(REF, owner="slow", now=at(now))
        retry_at = at(now + BEAT / 2)
        refused = await store.claim(REF, owner="retry", fingerprint="fp", now=retry_at)
        assert refused.result is ClaimResult.IN_FLIGHT
        assert refused.locked_until == at(now + LEASE)
        assert refused.retry_after(retry_at) == math.ceil(LEASE - BEAT / 2)
    await complete(store, "slow", at(beats * BEAT + 0.5))
    assert await business_rows(store) == ["work-of-slow"]


async def test_one_lost_beat_leaves_the_claim_covered(store: SqlStore) -> None:
    await store.claim(REF, owner="slow", fingerprint="fp", now=at(0))
    assert await store.extend(REF, owner="slow", now=at(BEAT))
    # the beat at 2 × BEAT failed (the database did not answer): the lease set at BEAT holds
    probe = await store.claim(REF, owner="retry", fingerprint="fp", now=at(3 * BEAT))
    assert probe.result is ClaimResult.IN_FLIGHT
    assert await store.extend(REF, owner="slow", now=at(3 * BEAT))  # the next beat holds it


async def test_a_slow_owner_whose_claim_was_taken_over_cannot_complete_or_beat(
    store: SqlStore,
) -> None:
    """The owner stalled (a paused process) past its lease; a retry took the key. The owner,
    waking up, finds its beat refused, and its completion raises and rolls its work back."""
    await store.claim(REF, owner="stalled", fingerprint="fp", now=at(0))
    taken = await store.claim(REF, owner="retry", fingerprint="fp", now=at(LEASE))
    assert taken.result is ClaimResult.TAKEN_OVER
    assert not await store.extend(REF, owner="stalled", now=at(LEASE + 0.1))
    with pytest.raises(IdempotencyLeaseLost):
        await complete(store, "stalled", at(LEASE + 0.2))
    await complete(store, "retry", at(LEASE + 0.3))
    assert await business_rows(store) == ["work-of-retry"]
    replay = await store.claim(REF, owner="late", fingerprint="fp", now=at(LEASE + 1))
    assert replay.result is ClaimResult.COMPLETED


async def test_a_takeover_is_a_compare_and_set_on_the_owner_it_saw_expire(
    store: SqlStore,
) -> None:
    """A taker that read the row while ``a`` held it must not take it from ``b``, who took
    it over in between — even when ``b``'s lease has run out by the taker's clock."""
    await store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    assert (await store.claim(REF, owner="b", fingerprint="fp", now=at(LEASE))).owned

    async def take_over(seen_owner: str, now: datetime) -> bool:
        # The named query, run as a taker that read the row while ``seen_owner`` held it.
        params = store._claim_params(REF, "c", "fp", now)
        async with store.database.write() as session:
            taken = await session.execute(sql.TAKE_OVER, {**params, "k_seen_owner": seen_owner})
            return taken.first() is not None

    assert not await take_over("a", at(3 * LEASE))  # stale: the row is b's now
    async with store.database.read() as session:
        owner = await session.scalar(
            select(IdempotencyKey.owner).where(IdempotencyKey.key == REF.key)
        )
    assert owner == "b"
    assert await take_over("b", at(3 * LEASE))  # what a fresh read would have seen


async def test_a_lookup_reads_without_claiming(store: SqlStore) -> None:
    absent = await store.lookup(REF, now=at(0))
    assert absent is not None
    assert absent.result is ClaimResult.ABSENT  # no row at all: the claim may insert at once
    async with store.database.read() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
    await store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    held = await store.lookup(REF, now=at(1))
    assert held is not None
    assert held.result is ClaimResult.IN_FLIGHT
    assert held.retry_after(at(1)) == 2
    assert await store.lookup(REF, now=at(LEASE)) is None  # expired: nothing holds it
    await complete(store, "a", at(1))
    done = await store.lookup(REF, now=at(2))
    assert done is not None
    assert done.result is ClaimResult.COMPLETED
    assert done.response == CREATED
    assert done.fingerprint == "fp"


async def test_a_claim_told_the_key_was_absent_still_loses_to_a_claim_made_since(
    store: SqlStore,
) -> None:
    # The replay step saw no row; another request claimed the key before this one's claim.
    assert (await store.lookup(REF, now=at(0))) == Claim(ClaimResult.ABSENT)
    assert (await store.claim(REF, owner="a", fingerprint="fp", now=at(0))).owned
    late = await store.claim(REF, owner="b", fingerprint="fp", now=at(0), seen_absent=True)
    assert late.result is ClaimResult.IN_FLIGHT
    assert not late.owned
    await complete(store, "a", at(1))
    again = await store.claim(REF, owner="c", fingerprint="fp", now=at(1), seen_absent=True)
    assert again.result is ClaimResult.COMPLETED
    assert again.response == CREATED

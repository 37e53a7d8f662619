"""The idempotency store's contract, on every store: memory, SQLite and PostgreSQL.

One suite, over made-up times, for everything the middleware relies on: claim,
replay, a key reused with another request, lease expiry and the
compare-and-set takeover, heartbeat renewal, completion inside the business
transaction, release after a failure, expiry and purge, and concurrency (of
many claims or takeovers exactly one wins). The memory store joins the
business transaction of a session too; for it that session is on an SQLite
database it never writes to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from tests.support.databases import Templates, fresh_database

from keel.db.engine import Database
from keel.guard.idempotency import (
    ClaimResult,
    IdempotencyLeaseLost,
    IdempotencyStore,
    KeyRef,
    MemoryIdempotencyStore,
    PostgresIdempotencyStore,
    SqliteIdempotencyStore,
    StoredResponse,
    store_for,
)

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
REF = KeyRef("user-1", "org-1", "POST /v1/recognitions", "key-1")
CREATED = StoredResponse(201, (("content-type", "application/json"),), b'{"id":"r1"}')
LEASE = 60
RETENTION = 3600
STORES = ("memory", "sqlite", "postgres")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Backend:
    """A store and the database whose transactions stand for the business write."""

    store: IdempotencyStore
    database: Database

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self.database.write()


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(store_kind: str, templates: Templates, tmp_path: Path) -> Iterator[str]:
    """A fresh database (made synchronously: PostgreSQL's admin runs its own loop)."""
    backend = "sqlite" if store_kind == "memory" else store_kind
    with fresh_database(templates, backend, tmp_path) as url:
        yield url


@pytest.fixture
async def backend(store_kind: str, database_url: str) -> AsyncIterator[Backend]:
    database = Database(database_url)
    store: IdempotencyStore
    if store_kind == "memory":
        store = MemoryIdempotencyStore(lease_seconds=LEASE, retention_seconds=RETENTION)
    else:
        store = store_for(database, lease_seconds=LEASE, retention_seconds=RETENTION)
    yield Backend(store, database)
    await database.dispose()


async def complete(backend: Backend, owner: str, now: datetime, ref: KeyRef = REF) -> None:
    async with backend.transaction() as session:
        await backend.store.complete(
            session, ref, owner=owner, fingerprint="fp", response=CREATED, now=now
        )


async def claim(backend: Backend, owner: str, seconds: float) -> ClaimResult:
    found = await backend.store.claim(REF, owner=owner, fingerprint=None, now=at(seconds))
    return found.result


def test_each_database_gets_the_store_that_speaks_its_sql(backend: Backend) -> None:
    expected = {"sqlite": SqliteIdempotencyStore, "postgresql": PostgresIdempotencyStore}
    chosen = store_for(backend.database, lease_seconds=1, retention_seconds=1)
    assert type(chosen) is expected[backend.database.dialect]


# --- claim ---------------------------------------------------------------------


async def test_the_first_claim_wins_and_others_see_it_in_flight(backend: Backend) -> None:
    first = await backend.store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    second = await backend.store.claim(REF, owner="b", fingerprint="fp", now=at(1))
    assert first.result is ClaimResult.CLAIMED
    assert second.result is ClaimResult.IN_FLIGHT
    assert second.fingerprint == "fp"
    assert second.locked_until == at(LEASE)


async def test_a_claim_told_the_key_was_absent_still_loses_to_a_live_claim(
    backend: Backend,
) -> None:
    await backend.store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    late = await backend.store.claim(REF, owner="b", fingerprint="fp", now=at(1), seen_absent=True)
    assert late.result is ClaimResult.IN_FLIGHT


async def test_keys_are_scoped_by_user_and_operation(backend: Backend) -> None:
    store = backend.store
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    other_user = KeyRef("user-2", "org-1", REF.operation, REF.key)
    other_route = KeyRef(REF.user_id, REF.org_id, "POST /v1/exports", REF.key)
    assert (await store.claim(other_user, owner="b", fingerprint=None, now=at(0))).owned
    assert (await store.claim(other_route, owner="c", fingerprint=None, now=at(0))).owned


async def test_a_lookup_reads_without_claiming(backend: Backend) -> None:
    store = backend.store
    assert (await store.lookup(REF, now=at(0))) == await store.lookup(REF, now=at(0))
    assert (await store.lookup(REF, now=at(0))).result is ClaimResult.ABSENT  # type: ignore[union-attr]
    await store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    held = await store.lookup(REF, now=at(1))
    assert held is not None
    assert held.result is ClaimResult.IN_FLIGHT
    assert await store.lookup(REF, now=at(LEASE)) is None  # expired, not yet taken
    assert await claim(backend, "b", LEASE) is ClaimResult.TAKEN_OVER


# --- replay and conflict ---------------------------------------------------------


async def test_a_completed_key_answers_with_its_stored_response(backend: Backend) -> None:
    await claim(backend, "a", 0)
    await complete(backend, "a", at(1))
    replay = await backend.store.claim(REF, owner="b", fingerprint="fp", now=at(2))
    assert replay.result is ClaimResult.COMPLETED
    assert replay.fingerprint == "fp"
    assert replay.response == CREATED
    looked_up = await backend.store.lookup(REF, now=at(2))
    assert looked_up is not None
    assert looked_up.response == CREATED


async def test_a_key_reused_with_another_request_shows_the_first_fingerprint(
    backend: Backend,
) -> None:
    await backend.store.claim(REF, owner="a", fingerprint="first", now=at(0))
    racing = await backend.store.claim(REF, owner="b", fingerprint="second", now=at(1))
    assert (racing.result, racing.fingerprint) == (ClaimResult.IN_FLIGHT, "first")
    await complete(backend, "a", at(2))  # the outcome carries its own body's fingerprint, "fp"
    later = await backend.store.claim(REF, owner="c", fingerprint="second", now=at(3))
    assert (later.result, later.fingerprint) == (ClaimResult.COMPLETED, "fp")


# --- lease expiry, takeover, heartbeat ----------------------------------------------


async def test_a_claim_is_taken_over_only_after_its_lease(backend: Backend) -> None:
    await claim(backend, "a", 0)
    assert await claim(backend, "b", LEASE - 0.1) is ClaimResult.IN_FLIGHT
    assert await claim(backend, "b", LEASE) is ClaimResult.TAKEN_OVER
    with pytest.raises(IdempotencyLeaseLost):
        await complete(backend, "a", at(LEASE + 1))
    await complete(backend, "b", at(LEASE + 1))


async def test_extending_a_claim_keeps_it_past_its_first_lease(backend: Backend) -> None:
    await claim(backend, "a", 0)
    assert await backend.store.extend(REF, owner="a", now=at(50))
    assert await claim(backend, "b", 100) is ClaimResult.IN_FLIGHT
    assert await claim(backend, "b", 110) is ClaimResult.TAKEN_OVER


async def test_only_the_owner_of_a_live_claim_extends_it(backend: Backend) -> None:
    store = backend.store
    await claim(backend, "a", 0)
    assert not await store.extend(REF, owner="intruder", now=at(30))
    await claim(backend, "b", LEASE + 1)  # a's lease ran out
    assert not await store.extend(REF, owner="a", now=at(62))
    await complete(backend, "b", at(63))
    assert not await store.extend(REF, owner="b", now=at(64))  # completed: nothing to extend
    assert (await store.claim(REF, owner="c", fingerprint="fp", now=at(65))).response == CREATED


async def test_a_clock_that_jumps_backwards_never_frees_a_live_claim(backend: Backend) -> None:
    await claim(backend, "a", 100)
    assert await claim(backend, "b", -3600) is ClaimResult.IN_FLIGHT


# --- completion ------------------------------------------------------------------


async def test_completing_without_the_claim_raises_and_changes_nothing(backend: Backend) -> None:
    await claim(backend, "a", 0)
    with pytest.raises(IdempotencyLeaseLost):
        await complete(backend, "intruder", at(1))
    assert await claim(backend, "b", 2) is ClaimResult.IN_FLIGHT


async def test_a_completion_rolls_back_with_its_transaction(backend: Backend) -> None:
    store = backend.store
    await claim(backend, "a", 0)

    async def business_write_fails() -> None:
        async with backend.transaction() as session:
            await store.complete(
                session, REF, owner="a", fingerprint="fp", response=CREATED, now=at(1)
            )
            raise RuntimeError("the business write failed")

    with pytest.raises(RuntimeError):
        await business_write_fails()
    assert await claim(backend, "b", 2) is ClaimResult.IN_FLIGHT
    assert await store.release(REF, owner="a")
    assert await claim(backend, "b", 3) is ClaimResult.CLAIMED


async def test_a_refusal_is_settled_in_its_own_transaction(backend: Backend) -> None:
    store = backend.store
    refused = StoredResponse(422, (("content-type", "application/problem+json"),), b"{}")
    await store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    assert not await store.settle(REF, owner="b", fingerprint="fp", response=refused, now=at(1))
    assert await store.settle(REF, owner="a", fingerprint="fp", response=refused, now=at(1))
    assert not await store.settle(REF, owner="a", fingerprint="fp", response=refused, now=at(1))
    found = await store.claim(REF, owner="c", fingerprint="fp", now=at(2))
    assert found.response == refused


# --- release on failure -------------------------------------------------------------


async def test_a_released_key_can_be_claimed_again_at_once(backend: Backend) -> None:
    await claim(backend, "a", 0)
    assert await backend.store.release(REF, owner="a")
    assert await claim(backend, "b", 1) is ClaimResult.CLAIMED
    assert not await backend.store.release(REF, owner="a")  # b's claim is not a's to give


async def test_release_never_removes_a_stored_outcome_or_another_owners_claim(
    backend: Backend,
) -> None:
    await claim(backend, "a", 0)
    assert not await backend.store.release(REF, owner="b")
    await complete(backend, "a", at(1))
    assert not await backend.store.release(REF, owner="a")
    assert await claim(backend, "c", 2) is ClaimResult.COMPLETED


# --- expiry and purge ---------------------------------------------------------------


async def test_expired_outcomes_are_reclaimed_and_purged(backend: Backend) -> None:
    store = backend.store
    await claim(backend, "a", 0)
    await complete(backend, "a", at(1))
    assert await claim(backend, "b", RETENTION) is ClaimResult.COMPLETED
    assert await claim(backend, "b", RETENTION + 1) is ClaimResult.TAKEN_OVER
    other = KeyRef("user-9", "org-1", REF.operation, "k")
    await store.claim(other, owner="x", fingerprint=None, now=at(0))
    await complete(backend, "x", at(1), other)
    live = KeyRef("user-9", "org-1", REF.operation, "live")
    await store.claim(live, owner="y", fingerprint=None, now=at(RETENTION))
    assert await store.purge_expired(at(RETENTION)) == 0
    assert await store.purge_expired(at(RETENTION + 1)) == 1  # "other"; the reclaimed REF lives
    assert await store.purge_expired(at(100_000)) == 2
    assert await store.purge_expired(at(100_000)) == 0
    assert (await store.lookup(live, now=at(100_000))).result is ClaimResult.ABSENT  # type: ignore[union-attr]


async def test_an_abandoned_claim_is_purged_only_once_its_retention_is_over(
    backend: Backend,
) -> None:
    await claim(backend, "dead", 0)
    assert await backend.store.purge_expired(at(LEASE + 1)) == 0  # expired, but retained
    assert await backend.store.purge_expired(at(RETENTION)) == 1
    assert await claim(backend, "b", RETENTION) is ClaimResult.CLAIMED


# --- concurrency ------------------------------------------------------------------


async def test_concurrent_claims_have_exactly_one_winner(backend: Backend) -> None:
    claims = await asyncio.gather(
        *(backend.store.claim(REF, owner=f"o{i}", fingerprint=None, now=at(0)) for i in range(12))
    )
    assert [c.result for c in claims].count(ClaimResult.CLAIMED) == 1
    assert sum(c.owned for c in claims) == 1


async def test_concurrent_takeovers_have_exactly_one_winner(backend: Backend) -> None:
    await claim(backend, "dead", 0)
    claims = await asyncio.gather(
        *(
            backend.store.claim(REF, owner=f"o{i}", fingerprint=None, now=at(LEASE + 1))
            for i in range(12)
        )
    )
    assert [c.result for c in claims].count(ClaimResult.TAKEN_OVER) == 1
    assert sum(c.owned for c in claims) == 1

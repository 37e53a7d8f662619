"""The SQL idempotency store's contract, on SQLite and PostgreSQL, over made-up times."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from tests.support.databases import empty_database

from keel import migrations
from keel.db.engine import Database
from keel.db.tables import Base
from keel.guard.idempotency import (
    ClaimResult,
    IdempotencyLeaseLost,
    KeyRef,
    SqlIdempotencyStore,
    StoredResponse,
    purge_expired,
    sql,
)

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
REF = KeyRef("user-1", "org-1", "POST /v1/recognitions", "key-1")
CREATED = StoredResponse(201, (("content-type", "application/json"),), b'{"id":"r1"}')


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(database: Database) -> SqlIdempotencyStore:
    return SqlIdempotencyStore(database, lease_seconds=60, retention_seconds=3600)


async def complete(
    store: SqlIdempotencyStore, owner: str, now: datetime, ref: KeyRef = REF
) -> None:
    async with store.database.write() as session:
        await store.complete(session, ref, owner=owner, fingerprint="fp", response=CREATED, now=now)


async def test_the_first_claim_wins_and_others_see_it_in_flight(store: SqlIdempotencyStore) -> None:
    first = await store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    second = await store.claim(REF, owner="b", fingerprint="fp", now=at(1))
    assert first.result is ClaimResult.CLAIMED
    assert second.result is ClaimResult.IN_FLIGHT
    assert second.fingerprint == "fp"
    assert second.locked_until == at(60)


async def test_keys_are_scoped_by_user_and_operation(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    other_user = KeyRef("user-2", "org-1", REF.operation, REF.key)
    other_route = KeyRef(REF.user_id, REF.org_id, "POST /v1/exports", REF.key)
    assert (await store.claim(other_user, owner="b", fingerprint=None, now=at(0))).owned
    assert (await store.claim(other_route, owner="c", fingerprint=None, now=at(0))).owned


async def test_a_completed_key_answers_with_its_stored_response(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    await complete(store, "a", at(1))
    claim = await store.claim(REF, owner="b", fingerprint="fp", now=at(2))
    assert claim.result is ClaimResult.COMPLETED
    assert claim.fingerprint == "fp"
    assert claim.response == CREATED


async def test_a_claim_is_taken_over_only_after_its_lease(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(59.9))
    ).result is ClaimResult.IN_FLIGHT
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(60))
    ).result is ClaimResult.TAKEN_OVER
    with pytest.raises(IdempotencyLeaseLost):
        await complete(store, "a", at(61))
    await complete(store, "b", at(61))


async def test_extending_a_claim_keeps_it_past_its_first_lease(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    assert await store.extend(REF, owner="a", now=at(50))
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(100))
    ).result is ClaimResult.IN_FLIGHT
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(110))
    ).result is ClaimResult.TAKEN_OVER


async def test_only_the_owner_of_a_live_claim_extends_it(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    assert not await store.extend(REF, owner="intruder", now=at(30))
    await store.claim(REF, owner="b", fingerprint=None, now=at(61))  # a's lease ran out
    assert not await store.extend(REF, owner="a", now=at(62))
    await complete(store, "b", at(63))
    assert not await store.extend(REF, owner="b", now=at(64))  # completed: nothing to extend
    assert (await store.claim(REF, owner="c", fingerprint="fp", now=at(65))).response == CREATED


async def test_a_clock_that_jumps_backwards_never_frees_a_live_claim(
    store: SqlIdempotencyStore,
) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(100))
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(-3600))
    ).result is ClaimResult.IN_FLIGHT


async def test_completing_without_the_claim_raises_and_changes_nothing(
    store: SqlIdempotencyStore,
) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    with pytest.raises(IdempotencyLeaseLost):
        await complete(store, "intruder", at(1))
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(2))
    ).result is ClaimResult.IN_FLIGHT


async def test_a_completion_rolls_back_with_its_transaction(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))

    async def business_write_fails() -> None:
        async with store.database.write() as session:
            await store.complete(
                session, REF, owner="a", fingerprint="fp", response=CREATED, now=at(1)
            )
            raise RuntimeError("the business write failed")

    with pytest.raises(RuntimeError):
        await business_write_fails()
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(2))
    ).result is ClaimResult.IN_FLIGHT
    assert await store.release(REF, owner="a")
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(3))
    ).result is ClaimResult.CLAIMED


async def test_release_never_removes_a_stored_outcome_or_another_owners_claim(
    store: SqlIdempotencyStore,
) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    assert not await store.release(REF, owner="b")
    await complete(store, "a", at(1))
    assert not await store.release(REF, owner="a")
    assert (
        await store.claim(REF, owner="c", fingerprint=None, now=at(2))
    ).result is ClaimResult.COMPLETED


async def test_a_refusal_is_settled_in_its_own_transaction(store: SqlIdempotencyStore) -> None:
    refused = StoredResponse(422, (("content-type", "application/problem+json"),), b"{}")
    await store.claim(REF, owner="a", fingerprint="fp", now=at(0))
    assert not await store.settle(REF, owner="b", fingerprint="fp", response=refused, now=at(1))
    assert await store.settle(REF, owner="a", fingerprint="fp", response=refused, now=at(1))
    claim = await store.claim(REF, owner="c", fingerprint="fp", now=at(2))
    assert claim.response == refused


async def test_expired_outcomes_are_reclaimed_and_purged(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="a", fingerprint=None, now=at(0))
    await complete(store, "a", at(1))
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(3600))
    ).result is ClaimResult.COMPLETED
    assert (
        await store.claim(REF, owner="b", fingerprint=None, now=at(3601))
    ).result is ClaimResult.TAKEN_OVER
    other = KeyRef("user-9", "org-1", REF.operation, "k")
    await store.claim(other, owner="x", fingerprint=None, now=at(0))
    await complete(store, "x", at(1), other)
    live = KeyRef("user-9", "org-1", REF.operation, "live")
    await store.claim(live, owner="y", fingerprint=None, now=at(3600))
    assert await purge_expired(store.database, at(3600)) == 0
    assert await purge_expired(store.database, at(3601)) == 1  # "other"; the reclaimed REF lives on
    assert await purge_expired(store.database, at(100_000)) == 2
    assert await purge_expired(store.database, at(100_000)) == 0


async def test_purge_works_in_batches(
    store: SqlIdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "PURGE_BATCH", 3)
    for index in range(7):
        await store.claim(
            KeyRef("u", "o", "POST /x", f"k{index}"), owner="a", fingerprint=None, now=at(0)
        )
    assert await purge_expired(store.database, at(10**6)) == 7


async def test_concurrent_claims_have_exactly_one_winner(store: SqlIdempotencyStore) -> None:
    claims = await asyncio.gather(
        *(store.claim(REF, owner=f"o{i}", fingerprint=None, now=at(0)) for i in range(12))
    )
    assert sum(claim.owned for claim in claims) == 1


async def test_concurrent_takeovers_have_exactly_one_winner(store: SqlIdempotencyStore) -> None:
    await store.claim(REF, owner="dead", fingerprint=None, now=at(0))
    claims = await asyncio.gather(
        *(store.claim(REF, owner=f"o{i}", fingerprint=None, now=at(61)) for i in range(12))
    )
    assert [claim.result for claim in claims].count(ClaimResult.TAKEN_OVER) == 1
    assert sum(claim.owned for claim in claims) == 1


async def test_the_migration_goes_down_and_up_again(database: Database) -> None:
    await migrations.downgrade(database, "0001")
    assert await migrations.current_revision(database) == "0001"
    await migrations.upgrade(database)
    assert await migrations.current_revision(database) == migrations.head_revision()


def test_keel_idempotency_purge_prints_how_many_it_deleted(
    database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "KEEL_DATABASE_URL": database_url, "KEEL_STORAGE_DIR": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from keel.cli import main; main()",
            "idempotency",
            "purge",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"purged": 0}


def test_the_migration_builds_the_table_the_model_describes(backend: str, tmp_path: Path) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [
            diff
            for diff in compare_metadata(context, Base.metadata)
            if "idempotency_keys" in repr(diff)
        ]

    async def migrated_then_compared(url: str) -> list[object]:
        database = Database(url)
        try:
            await migrations.upgrade(database)
            async with database.engine.connect() as connection:
                return await connection.run_sync(differences)
        finally:
            await database.dispose()

    with empty_database(backend, tmp_path) as url:
        assert asyncio.run(migrated_then_compared(url)) == []

"""The SQL idempotency store, on SQLite and PostgreSQL.

Named queries over ``idempotency_keys``:

- **claim** — ``INSERT … ON CONFLICT DO NOTHING RETURNING``: the primary key
  (user, operation, key) decides between racing processes and exactly one
  insert returns a row. Otherwise the row is read: a live outcome or claim is
  the answer; an expired one is taken by a conditional ``UPDATE``
  (PostgreSQL re-checks its ``WHERE`` after waiting on the row lock, SQLite's
  ``BEGIN IMMEDIATE`` serialises writers), so of two takers exactly one wins.
  On SQLite the read comes first, in a read transaction, so replays and
  conflicts never queue for the database-wide write lock.
- **complete** — an ``UPDATE … WHERE owner = :owner AND state = 'in_flight'``
  run in the *business* transaction. The row lock it takes is held until that
  transaction commits, so no takeover can slip in between the completion and
  the commit; if it matches no row, the claim is lost and it raises.
- **release** — ``DELETE … WHERE owner = :owner AND state = 'in_flight'``:
  never removes a stored outcome, so releasing after an ambiguous failure is
  always safe.
- **purge** — deletes expired rows in primary-key batches so no single
  statement holds many row locks for long.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, delete, or_, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from keel.db.engine import Database
from keel.db.tables_idempotency import IdempotencyKey
from keel.guard.idempotency.errors import IdempotencyLeaseLost
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.store import (
    Claim,
    ClaimResult,
    KeyState,
    StoredResponse,
    Transition,
)

log = structlog.get_logger(__name__)

CLAIM_ATTEMPTS = 3  # a row can vanish between our insert and our read (released or purged)
PURGE_BATCH = 1000

_T = IdempotencyKey


_SELECT = select(
    _T.state,
    _T.fingerprint,
    _T.locked_until,
    _T.expires_at,
    _T.response_status,
    _T.response_headers,
    _T.response_body,
)


def _held(row: Any, now: datetime) -> Claim | None:
    """What a live row says: a stored outcome, or another request's claim; else ``None``."""
    if row is None:
        return None
    if row.state == KeyState.COMPLETED and row.expires_at > now:
        response = _stored(row.response_status, row.response_headers, row.response_body)
        return Claim(ClaimResult.COMPLETED, fingerprint=row.fingerprint, response=response)
    if row.state == KeyState.IN_FLIGHT and row.locked_until > now:
        return Claim(
            ClaimResult.IN_FLIGHT, fingerprint=row.fingerprint, locked_until=row.locked_until
        )
    return None


def _where_key(ref: KeyRef) -> Any:
    return and_(_T.user_id == ref.user_id, _T.operation == ref.operation, _T.key == ref.key)


def _headers_json(response: StoredResponse) -> str:
    return json.dumps([list(pair) for pair in response.headers], separators=(",", ":"))


def _stored(status: int | None, headers: str | None, body: bytes | None) -> StoredResponse:
    pairs = json.loads(headers or "[]")
    return StoredResponse(
        status=status or 500,
        headers=tuple((str(name), str(value)) for name, value in pairs),
        body=bytes(body or b""),
    )


class SqlIdempotencyStore:
    def __init__(
        self, database: Database, *, lease_seconds: float, retention_seconds: float
    ) -> None:
        self.database = database
        self.lease = timedelta(seconds=lease_seconds)
        self.retention = timedelta(seconds=retention_seconds)
        insert_for = postgresql.insert if database.dialect == "postgresql" else sqlite.insert
        self._insert = insert_for
        # SQLite: read before writing, so a replay or a conflict never takes the
        # database-wide write lock. PostgreSQL: insert first — a new key costs one
        # statement, and a retry finds the row in the same transaction.
        self._read_first = database.dialect == "sqlite"

    def _fresh(self, ref: KeyRef, owner: str, fingerprint: str | None, now: datetime) -> Any:
        return {
            "org_id": ref.org_id,
            "state": KeyState.IN_FLIGHT.value,
            "owner": owner,
            "fingerprint": fingerprint,
            "created_at": now,
            "locked_until": now + self.lease,
            "expires_at": now + max(self.retention, self.lease),
            "completed_at": None,
            "response_status": None,
            "response_headers": None,
            "response_body": None,
        }

    async def claim(
        self, ref: KeyRef, *, owner: str, fingerprint: str | None, now: datetime
    ) -> Claim:
        values = self._fresh(ref, owner, fingerprint, now)
        for _ in range(CLAIM_ATTEMPTS):
            row = None
            if self._read_first:
                async with self.database.read() as session:
                    row = await self._read(session, ref)
                held = _held(row, now)
                if held is not None:
                    return held
            async with self.database.write() as session:
                await self._relax_durability(session)
                if row is None:
                    inserted = await session.execute(
                        self._insert(_T)
                        .values(user_id=ref.user_id, operation=ref.operation, key=ref.key, **values)
                        .on_conflict_do_nothing(index_elements=["user_id", "operation", "key"])
                        .returning(_T.owner)
                    )
                    if inserted.first() is not None:
                        return Claim(ClaimResult.CLAIMED)
                    if self._read_first:
                        continue  # inserted by another request since our read: read again
                    row = await self._read(session, ref)
                    held = _held(row, now)
                    if held is not None:
                        return held
                    if row is None:
                        continue  # released between our insert and our read
                expired_claim = and_(_T.state == KeyState.IN_FLIGHT, _T.locked_until <= now)
                expired_outcome = and_(_T.state == KeyState.COMPLETED, _T.expires_at <= now)
                taken = await session.execute(
                    update(_T)
                    .where(_where_key(ref), or_(expired_claim, expired_outcome))
                    .values(**values)
                    .returning(_T.owner)
                )
                if taken.first() is not None:
                    log.info("idempotency_transition", transition=Transition.TAKE_OVER, **_log(ref))
                    return Claim(ClaimResult.TAKEN_OVER)
        # The row changed hands CLAIM_ATTEMPTS times in a row: report it as busy.
        return Claim(ClaimResult.IN_FLIGHT, locked_until=now)

    async def _read(self, session: AsyncSession, ref: KeyRef) -> Any:
        """The key's row (state, fingerprint, times, stored response), or ``None``."""
        return (await session.execute(_SELECT.where(_where_key(ref)))).one_or_none()

    async def _relax_durability(self, session: AsyncSession) -> None:
        """Claims, releases and refusals commit without waiting for the WAL flush.

        Safe for exactly-once: a completion is an UPDATE that needs the claim row
        and commits synchronously, and PostgreSQL flushes WAL in order, so a
        durable completion implies a durable claim. A claim lost in a database
        crash only makes its request's completion fail and roll back; a lost
        release only leaves a claim to expire. It saves a disk flush per keyed
        request. (SQLite runs WAL with synchronous=NORMAL: no flush per commit.)
        """
        if self.database.dialect == "postgresql":
            await session.execute(text("SET LOCAL synchronous_commit TO OFF"))

    async def complete(
        self,
        session: AsyncSession,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str,
        response: StoredResponse,
        now: datetime,
    ) -> None:
        if not await self._store(session, ref, owner, fingerprint, response, now):
            log.warning("idempotency_lease_lost", **_log(ref))
            raise IdempotencyLeaseLost(
                "this request's claim on the key expired and another request took it over; "
                "retry to get that request's outcome"
            )

    async def settle(
        self,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str | None,
        response: StoredResponse,
        now: datetime,
    ) -> bool:
        async with self.database.write() as session:
            await self._relax_durability(session)
            return await self._store(session, ref, owner, fingerprint, response, now)

    async def _store(
        self,
        session: AsyncSession,
        ref: KeyRef,
        owner: str,
        fingerprint: str | None,
        response: StoredResponse,
        now: datetime,
    ) -> bool:
        result = await session.execute(
            update(_T)
            .where(_where_key(ref), _T.owner == owner, _T.state == KeyState.IN_FLIGHT)
            .values(
                state=KeyState.COMPLETED.value,
                fingerprint=fingerprint,
                completed_at=now,
                expires_at=now + self.retention,
                response_status=response.status,
                response_headers=_headers_json(response),
                response_body=response.body,
            )
            .returning(_T.owner)
        )
        return result.first() is not None

    async def release(self, ref: KeyRef, *, owner: str) -> bool:
        async with self.database.write() as session:
            await self._relax_durability(session)
            result = await session.execute(
                delete(_T)
                .where(_where_key(ref), _T.owner == owner, _T.state == KeyState.IN_FLIGHT)
                .returning(_T.owner)
            )
            return result.first() is not None

    async def purge_expired(self, now: datetime) -> int:
        expired = and_(
            _T.expires_at <= now,
            or_(_T.state == KeyState.COMPLETED, _T.locked_until <= now),
        )
        total = 0
        while True:
            async with self.database.write() as session:
                batch = select(_T.user_id, _T.operation, _T.key).where(expired).limit(PURGE_BATCH)
                result = await session.execute(
                    delete(_T)
                    .where(tuple_(_T.user_id, _T.operation, _T.key).in_(batch), expired)
                    .returning(_T.key)
                )
                count = len(result.all())
            total += count
            if count < PURGE_BATCH:
                break
        if total:
            log.info("idempotency_purged", count=total)
        return total


def _log(ref: KeyRef) -> dict[str, str]:
    # The key itself is client data and may be guessable; it is never logged.
    return {"user_id": ref.user_id, "operation": ref.operation}


async def purge_expired(database: Database, now: datetime) -> int:
    """Delete expired keys; the periodic job and ``keel idempotency purge`` call this."""
    store = SqlIdempotencyStore(database, lease_seconds=0.0, retention_seconds=0.0)
    return await store.purge_expired(now)

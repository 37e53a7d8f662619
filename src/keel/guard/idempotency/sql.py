"""What the SQLite and PostgreSQL idempotency stores share: the named queries and
every move but the claim.

Named queries over ``idempotency_keys``; each ``state`` condition and value
comes from the claim state machine (``store.TRANSITIONS``), so a query cannot
move a row along an edge the table lacks:

- **take over** — a compare-and-set ``UPDATE`` on the owner token that was
  read *and* on the lease (or retention) still being over (PostgreSQL
  re-checks its ``WHERE`` after waiting on the row lock, SQLite's ``BEGIN
  IMMEDIATE`` serialises writers): of two takers exactly one wins, and a claim
  whose heartbeat landed between the read and the update is left alone.
- **complete** — an ``UPDATE … WHERE owner = :owner AND state = 'in_flight'``
  run in the *business* transaction. The row lock it takes is held until that
  transaction commits, so no takeover can slip in between the completion and
  the commit; if it matches no row, the claim is lost and it raises.
- **extend** — the heartbeat's ``UPDATE … SET locked_until`` ``WHERE owner =
  :owner AND state = 'in_flight'``: a request still running keeps its claim;
  once another request took the key over (new owner) it matches nothing.
- **release** — ``DELETE … WHERE owner = :owner AND state = 'in_flight'``:
  never removes a stored outcome, so releasing after an ambiguous failure is
  always safe.
- **read** — the row, for ``lookup`` and for the claim's look at the row in
  its way (``KeyRow``).
- **purge** — deletes expired rows in primary-key batches so no single
  statement holds many row locks for long.

How a claim reaches the row differs per database, and is each store's own:
``sqlite.py`` reads first, ``postgresql.py`` inserts first in one statement.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import structlog
from sqlalchemy import Table, and_, bindparam, delete, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from keel.db.engine import Database
from keel.db.tables_idempotency import IdempotencyKey
from keel.guard.idempotency.errors import IdempotencyLeaseLost
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.store import (
    Claim,
    ClaimResult,
    StoredResponse,
    Transition,
    source_of,
    standing,
    take_over,
    target_of,
)

log = structlog.get_logger(__name__)

CLAIM_ATTEMPTS = 3  # a row can vanish between our insert and our read (released or purged)
PURGE_BATCH = 1000

# The named queries, built once over the table with bound parameters: building a
# statement and its cache key costs far more than running a prebuilt one
# (bench/bench_idempotency.py).
TABLE = cast(Table, IdempotencyKey.__table__)
_T = TABLE.c
THE_KEY = and_(
    _T.user_id == bindparam("k_user"),
    _T.operation == bindparam("k_operation"),
    _T.key == bindparam("k_key"),
)
CLAIM_VALUES = {
    "org_id": bindparam("v_org"),
    "state": target_of(Transition.CLAIM),
    "owner": bindparam("v_owner"),
    "fingerprint": bindparam("v_fingerprint"),
    "created_at": bindparam("v_now"),
    "locked_until": bindparam("v_locked_until"),
    "expires_at": bindparam("v_expires_at"),
}
READ = select(
    _T.state,
    _T.owner,
    _T.fingerprint,
    _T.locked_until,
    _T.expires_at,
    _T.response_status,
    _T.response_headers,
    _T.response_body,
).where(THE_KEY)

TAKE_OVER = (
    update(TABLE)
    .where(
        THE_KEY,
        _T.owner == bindparam("k_seen_owner"),  # compare-and-set: the holder we saw expire
        or_(
            and_(
                _T.state == source_of(Transition.TAKE_OVER),
                _T.locked_until <= bindparam("v_now"),
            ),
            and_(
                _T.state == source_of(Transition.RECLAIM),
                _T.expires_at <= bindparam("v_now"),
            ),
        ),
    )
    .values(
        **CLAIM_VALUES,
        completed_at=None,
        response_status=None,
        response_headers=None,
        response_body=None,
    )
    .returning(_T.owner)
)
COMPLETE = (
    update(TABLE)
    .where(THE_KEY, _T.owner == bindparam("k_owner"), _T.state == source_of(Transition.COMPLETE))
    .values(
        state=target_of(Transition.COMPLETE),
        fingerprint=bindparam("v_fingerprint"),
        completed_at=bindparam("v_now"),
        expires_at=bindparam("v_expires_at"),
        response_status=bindparam("v_status"),
        response_headers=bindparam("v_headers"),
        response_body=bindparam("v_body"),
    )
    .returning(_T.owner)
)
EXTEND = (
    update(TABLE)
    .where(THE_KEY, _T.owner == bindparam("k_owner"), _T.state == source_of(Transition.EXTEND))
    .values(locked_until=bindparam("v_locked_until"))
    .returning(_T.owner)
)
RELEASE = (
    delete(TABLE)
    .where(THE_KEY, _T.owner == bindparam("k_owner"), _T.state == source_of(Transition.RELEASE))
    .returning(_T.owner)
)


class KeyRow(NamedTuple):
    """The key's row as :func:`held` reads it, from a driver's record (``READ``'s columns)."""

    state: str
    owner: str
    fingerprint: str | None
    locked_until: datetime
    expires_at: datetime
    response_status: int | None
    response_headers: str | None
    response_body: bytes | None


def key_params(ref: KeyRef) -> dict[str, Any]:
    return {"k_user": ref.user_id, "k_operation": ref.operation, "k_key": ref.key}


def held(row: Any, now: datetime) -> Claim | None:
    """What a live row says: a stored outcome, or another request's claim; else ``None``."""
    if row is None:
        return None
    result = standing(row.state, row.locked_until, row.expires_at, now)
    if result is ClaimResult.COMPLETED:
        response = _stored(row.response_status, row.response_headers, row.response_body)
        return Claim(result, fingerprint=row.fingerprint, response=response)
    if result is ClaimResult.IN_FLIGHT:
        return Claim(result, fingerprint=row.fingerprint, locked_until=row.locked_until)
    return None


def headers_json(response: StoredResponse) -> str:
    return json.dumps([list(pair) for pair in response.headers], separators=(",", ":"))


def _stored(status: int | None, headers: str | None, body: bytes | None) -> StoredResponse:
    pairs = json.loads(headers or "[]")
    return StoredResponse(
        status=status or 500,
        headers=tuple((str(name), str(value)) for name, value in pairs),
        body=bytes(body or b""),
    )


def log_fields(ref: KeyRef) -> dict[str, str]:
    # The key itself is client data and may be guessable; it is never logged.
    return {"user_id": ref.user_id, "operation": ref.operation}


class SqlStore(ABC):
    """The moves both SQL stores make alike; a subclass supplies how a claim
    meets the row (:meth:`_claim_or_find`) and may relax a write's durability."""

    def __init__(
        self, database: Database, *, lease_seconds: float, retention_seconds: float
    ) -> None:
        self.database = database
        self.lease = timedelta(seconds=lease_seconds)
        self.retention = timedelta(seconds=retention_seconds)

    def _claim_params(
        self, ref: KeyRef, owner: str, fingerprint: str | None, now: datetime
    ) -> dict[str, Any]:
        return {
            **key_params(ref),
            "v_org": ref.org_id,
            "v_owner": owner,
            "v_fingerprint": fingerprint,
            "v_now": now,
            "v_locked_until": now + self.lease,
            "v_expires_at": now + max(self.retention, self.lease),
        }

    @abstractmethod
    async def _claim_or_find(self, ref: KeyRef, params: dict[str, Any], now: datetime) -> Any:
        """One attempt: a decided :class:`Claim` (ours, or a live holder's), the
        expired row in the way (to take over), or ``None`` (try again)."""

    @abstractmethod
    async def _relax_durability(self, session: AsyncSession) -> None:
        """Let claims, releases and refusals commit without waiting for a disk flush."""

    async def _claim(self, ref: KeyRef, params: dict[str, Any], now: datetime) -> Claim:
        for _ in range(CLAIM_ATTEMPTS):
            found = await self._claim_or_find(ref, params, now)
            if isinstance(found, Claim):
                return found
            if found is None:
                continue  # the row went away, or a racing insert is not visible yet
            row: Any = found
            # An expired claim or outcome: take it, if it is still the one we read.
            transition = take_over(row.state)
            async with self.database.write() as session:
                await self._relax_durability(session)
                taken = await session.execute(TAKE_OVER, {**params, "k_seen_owner": row.owner})
                if taken.first() is not None:
                    log.info("idempotency_transition", transition=transition, **log_fields(ref))
                    return Claim(ClaimResult.TAKEN_OVER)
        # The row changed hands CLAIM_ATTEMPTS times in a row: report it as busy.
        return Claim(ClaimResult.IN_FLIGHT, locked_until=now)

    @staticmethod
    def _lease_lost(ref: KeyRef) -> IdempotencyLeaseLost:
        log.warning("idempotency_lease_lost", **log_fields(ref))
        return IdempotencyLeaseLost.taken_over()

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
            raise self._lease_lost(ref)

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
        params = self._store_params(ref, owner, fingerprint, response, now)
        result = await session.execute(COMPLETE, params)
        return result.first() is not None

    def _store_params(
        self,
        ref: KeyRef,
        owner: str,
        fingerprint: str | None,
        response: StoredResponse,
        now: datetime,
    ) -> dict[str, Any]:
        """``COMPLETE``'s parameters: the outcome stored, kept for the retention period."""
        return {
            **key_params(ref),
            "k_owner": owner,
            "v_fingerprint": fingerprint,
            "v_now": now,
            "v_expires_at": now + self.retention,
            "v_status": response.status,
            "v_headers": headers_json(response),
            "v_body": response.body,
        }

    async def extend(self, ref: KeyRef, *, owner: str, now: datetime) -> bool:
        params = {**key_params(ref), "k_owner": owner, "v_locked_until": now + self.lease}
        async with self.database.write() as session:
            await self._relax_durability(session)
            result = await session.execute(EXTEND, params)
            return result.first() is not None

    async def release(self, ref: KeyRef, *, owner: str) -> bool:
        async with self.database.write() as session:
            await self._relax_durability(session)
            result = await session.execute(RELEASE, {**key_params(ref), "k_owner": owner})
            return result.first() is not None

    async def purge_expired(self, now: datetime) -> int:
        # PURGE, and RELEASE of a claim abandoned past its retention.
        expired = and_(
            _T.expires_at <= now,
            or_(
                _T.state == source_of(Transition.PURGE),
                and_(_T.state == source_of(Transition.RELEASE), _T.locked_until <= now),
            ),
        )
        total = 0
        while True:
            async with self.database.write() as session:
                batch = select(_T.user_id, _T.operation, _T.key).where(expired).limit(PURGE_BATCH)
                result = await session.execute(
                    delete(TABLE)
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

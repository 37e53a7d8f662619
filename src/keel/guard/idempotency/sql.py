"""The SQL idempotency store, on SQLite and PostgreSQL.

Named queries over ``idempotency_keys``:

- **claim** — ``INSERT … ON CONFLICT DO NOTHING RETURNING``: the primary key
  (user, operation, key) decides between racing processes and exactly one
  insert returns a row. Otherwise the row is read: a live outcome or claim is
  the answer; an expired one is taken by a compare-and-set ``UPDATE``, on the
  owner token that was read *and* on the lease still being over (PostgreSQL
  re-checks its ``WHERE`` after waiting on the row lock, SQLite's ``BEGIN
  IMMEDIATE`` serialises writers): of two takers exactly one wins, and a claim
  whose heartbeat landed between the read and the update is left alone.
  On SQLite the read comes first, in a read transaction, so replays and
  conflicts never queue for the database-wide write lock.
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
- **lookup** — the read alone, for the replay step in front of the limits
  (``replay.py``): a completed key is answered there, spending nothing.
- **purge** — deletes expired rows in primary-key batches so no single
  statement holds many row locks for long.

On PostgreSQL the two statements every first keyed request runs — the claim
of a new key and the completion — go to asyncpg directly (``postgresql.py``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, and_, bindparam, delete, or_, select, text, tuple_, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from keel.db.engine import Database
from keel.db.tables_idempotency import IdempotencyKey
from keel.guard.idempotency.errors import IdempotencyLeaseLost
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.postgresql import CLAIMED, claim_or_read, complete_in, read_key
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

# The named queries, built once over the table with bound parameters: building a
# statement and its cache key costs far more than running a prebuilt one
# (bench/bench_idempotency.py).
_TABLE = cast(Table, IdempotencyKey.__table__)
_T = _TABLE.c
_THE_KEY = and_(
    _T.user_id == bindparam("k_user"),
    _T.operation == bindparam("k_operation"),
    _T.key == bindparam("k_key"),
)
_IN_FLIGHT = KeyState.IN_FLIGHT.value
_COMPLETED = KeyState.COMPLETED.value
_CLAIM_VALUES = {
    "org_id": bindparam("v_org"),
    "state": _IN_FLIGHT,
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
).where(_THE_KEY)


# SQLite's claim; PostgreSQL claims with the asyncpg statement in ``postgresql.py``.
CLAIM_SQLITE = (
    sqlite.insert(_TABLE)
    .values(
        user_id=bindparam("k_user"),
        operation=bindparam("k_operation"),
        key=bindparam("k_key"),
        **_CLAIM_VALUES,
    )
    .on_conflict_do_nothing(index_elements=["user_id", "operation", "key"])
    .returning(_T.owner)
)
TAKE_OVER = (
    update(_TABLE)
    .where(
        _THE_KEY,
        _T.owner == bindparam("k_seen_owner"),  # compare-and-set: the holder we saw expire
        or_(
            and_(_T.state == _IN_FLIGHT, _T.locked_until <= bindparam("v_now")),
            and_(_T.state == _COMPLETED, _T.expires_at <= bindparam("v_now")),
        ),
    )
    .values(
        **_CLAIM_VALUES,
        completed_at=None,
        response_status=None,
        response_headers=None,
        response_body=None,
    )
    .returning(_T.owner)
)
COMPLETE = (
    update(_TABLE)
    .where(_THE_KEY, _T.owner == bindparam("k_owner"), _T.state == _IN_FLIGHT)
    .values(
        state=_COMPLETED,
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
    update(_TABLE)
    .where(_THE_KEY, _T.owner == bindparam("k_owner"), _T.state == _IN_FLIGHT)
    .values(locked_until=bindparam("v_locked_until"))
    .returning(_T.owner)
)
RELEASE = (
    delete(_TABLE)
    .where(_THE_KEY, _T.owner == bindparam("k_owner"), _T.state == _IN_FLIGHT)
    .returning(_T.owner)
)
RELAX_DURABILITY = text("SET LOCAL synchronous_commit TO OFF")


def _key(ref: KeyRef) -> tuple[str, str, str]:
    return (ref.user_id, ref.operation, ref.key)


def _claim_values(params: dict[str, Any]) -> tuple[Any, ...]:
    """The claim's values in the order of ``postgresql.CLAIM``'s parameters $4-$9."""
    names = ("v_org", "v_owner", "v_fingerprint", "v_now", "v_locked_until", "v_expires_at")
    return tuple(params[name] for name in names)


def _key_params(ref: KeyRef) -> dict[str, Any]:
    return {"k_user": ref.user_id, "k_operation": ref.operation, "k_key": ref.key}


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
        postgres = database.dialect == "postgresql"
        # SQLite: read before writing, so a replay or a conflict never takes the
        # database-wide write lock. PostgreSQL: insert first, on the asyncpg
        # connection (``postgresql.py``) — a new key costs one short transaction;
        # a key that exists is then read (and maybe taken over) through the ORM.
        self._read_first = not postgres

    def _claim_params(
        self, ref: KeyRef, owner: str, fingerprint: str | None, now: datetime
    ) -> dict[str, Any]:
        return {
            **_key_params(ref),
            "v_org": ref.org_id,
            "v_owner": owner,
            "v_fingerprint": fingerprint,
            "v_now": now,
            "v_locked_until": now + self.lease,
            "v_expires_at": now + max(self.retention, self.lease),
        }

    async def claim(
        self,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str | None,
        now: datetime,
        seen_absent: bool = False,
    ) -> Claim:
        params = self._claim_params(ref, owner, fingerprint, now)
        # SQLite: the replay step read the key a moment ago and found nothing, so
        # reading it again would cost a read transaction (BEGIN, SELECT, COMMIT)
        # for the same answer: insert at once. The insert's ON CONFLICT still
        # decides a race.
        if self._read_first and seen_absent and await self._insert(params):
            return Claim(ClaimResult.CLAIMED)
        # (an insert that did nothing met a row inserted since the lookup: read it)
        for _ in range(CLAIM_ATTEMPTS):
            found = await self._claim_or_find(ref, params, now)
            if isinstance(found, Claim):
                return found
            if found is None:
                continue  # the row went away, or a racing insert is not visible yet
            row: Any = found
            # An expired claim or outcome: take it, if it is still the one we read.
            async with self.database.write() as session:
                await self._relax_durability(session)
                taken = await session.execute(TAKE_OVER, {**params, "k_seen_owner": row.owner})
                if taken.first() is not None:
                    log.info("idempotency_transition", transition=Transition.TAKE_OVER, **_log(ref))
                    return Claim(ClaimResult.TAKEN_OVER)
        # The row changed hands CLAIM_ATTEMPTS times in a row: report it as busy.
        return Claim(ClaimResult.IN_FLIGHT, locked_until=now)

    async def _claim_or_find(self, ref: KeyRef, params: dict[str, Any], now: datetime) -> Any:
        """One attempt: a decided :class:`Claim` (ours, or a live holder's), the
        expired row in the way (to take over), or ``None`` (try again)."""
        row: Any
        if self._read_first:
            async with self.database.read() as session:
                row = (await session.execute(READ, params)).one_or_none()
            if row is None:
                # None: inserted by another request since our read; read again
                return Claim(ClaimResult.CLAIMED) if await self._insert(params) else None
        else:
            found = await claim_or_read(self.database, _key(ref), _claim_values(params))
            if found == CLAIMED:
                return Claim(ClaimResult.CLAIMED)
            row = found
        held = _held(row, now)
        return held if held is not None else row

    async def lookup(self, ref: KeyRef, *, now: datetime) -> Claim | None:
        """What holds the key now (a live outcome or claim, or ``ABSENT``), without taking it."""
        if self.database.asyncpg:
            row: Any = await read_key(self.database, _key(ref))
        else:
            async with self.database.read() as session:
                row = (await session.execute(READ, _key_params(ref))).one_or_none()
        if row is None:
            return Claim(ClaimResult.ABSENT)
        return _held(row, now)

    async def _insert(self, params: dict[str, Any]) -> bool:
        async with self.database.write() as session:
            inserted = await session.execute(CLAIM_SQLITE, params)
            return inserted.first() is not None

    async def _relax_durability(self, session: AsyncSession) -> None:
        """Claims, releases and refusals commit without waiting for the WAL flush.

        Safe for exactly-once: a completion is an UPDATE that needs the claim row
        and commits synchronously, and PostgreSQL flushes WAL in order, so a
        durable completion implies a durable claim. A claim lost in a database
        crash only makes its request's completion fail and roll back; a lost
        release only leaves a claim to expire. It saves a disk flush per keyed
        request. (SQLite runs WAL with synchronous=NORMAL: no flush per commit.)
        """
        if not self._read_first:
            await session.execute(RELAX_DURABILITY)

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
        stored: bool | None = None
        if not self._read_first:
            values = (
                fingerprint,
                now,
                now + self.retention,
                response.status,
                _headers_json(response),
                response.body,
            )
            stored = await complete_in(session, _key(ref), owner, values)
        if stored is None:
            stored = await self._store(session, ref, owner, fingerprint, response, now)
        if not stored:
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
        params = {
            **_key_params(ref),
            "k_owner": owner,
            "v_fingerprint": fingerprint,
            "v_now": now,
            "v_expires_at": now + self.retention,
            "v_status": response.status,
            "v_headers": _headers_json(response),
            "v_body": response.body,
        }
        result = await session.execute(COMPLETE, params)
        return result.first() is not None

    async def extend(self, ref: KeyRef, *, owner: str, now: datetime) -> bool:
        params = {**_key_params(ref), "k_owner": owner, "v_locked_until": now + self.lease}
        async with self.database.write() as session:
            await self._relax_durability(session)
            result = await session.execute(EXTEND, params)
            return result.first() is not None

    async def release(self, ref: KeyRef, *, owner: str) -> bool:
        async with self.database.write() as session:
            await self._relax_durability(session)
            result = await session.execute(RELEASE, {**_key_params(ref), "k_owner": owner})
            return result.first() is not None

    async def purge_expired(self, now: datetime) -> int:
        expired = and_(
            _T.expires_at <= now,
            or_(_T.state == _COMPLETED, _T.locked_until <= now),
        )
        total = 0
        while True:
            async with self.database.write() as session:
                batch = select(_T.user_id, _T.operation, _T.key).where(expired).limit(PURGE_BATCH)
                result = await session.execute(
                    delete(_TABLE)
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

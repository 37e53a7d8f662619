"""The idempotency store on SQLite: read first, so replays never queue for the write lock.

SQLite has one writer at a time for the whole database (``BEGIN IMMEDIATE``).
A claim therefore reads the key first (one statement on its own): a replay or a
conflict is answered from that read without ever waiting for the write lock.
Only a key with no row is inserted (``INSERT … ON CONFLICT DO NOTHING
RETURNING``, one statement in its own implicit transaction: the primary key
decides between racing processes and exactly one insert returns a row); an
expired row is taken over with the shared compare-and-set (``sql.py``).

The replay step in front of the limits (``replay.py``) has usually just read
the key and found nothing; it says so with ``seen_absent``, and the claim
then goes straight to its insert — reading again would cost a statement for
the same answer. The insert's
``ON CONFLICT`` still decides a race; an insert that did nothing met a row
inserted since the lookup, and the claim reads it as usual.

Both statements every keyed request makes — the read and the insert — go to the
aiosqlite connection underneath SQLAlchemy's pooled one, compiled once
(``keel.db.prepared``): through SQLAlchemy each paid for a ``Connection``, an
execution context and a result object, and each was a hop to the connection's
thread; the key cost a keyed ``POST`` 2.1 ms of CPU on SQLite against 0.8 ms on
PostgreSQL (bench/RESULTS.md, issue 19). The read runs on the event loop from a
reader that never waits for a lock (``OneHopConnection.read_now`` says why that
cannot block); the insert is one hop to the thread, under this process's writer
turn as every write (``OneHopConnection.write_alone``). The completion, in the
business transaction, goes to the same transaction's driver connection. The
rarer moves (take over, settle, extend, release, purge) stay on SQLAlchemy
(``sql.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from keel.db.prepared import PreparedRead, PreparedWrite
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.sql import (
    CLAIM_VALUES,
    COMPLETE,
    READ,
    TABLE,
    KeyRow,
    SqlStore,
    held,
    key_params,
)
from keel.guard.idempotency.store import Claim, ClaimResult, StoredResponse

CLAIM = PreparedWrite(
    sqlite.insert(TABLE)
    .values(
        user_id=bindparam("k_user"),
        operation=bindparam("k_operation"),
        key=bindparam("k_key"),
        **CLAIM_VALUES,
    )
    .on_conflict_do_nothing(index_elements=["user_id", "operation", "key"])
    .returning(TABLE.c.owner)
)
KEY_READ = PreparedRead(READ)
STORE = PreparedWrite(COMPLETE)


class SqliteIdempotencyStore(SqlStore):
    """:class:`~keel.guard.idempotency.store.IdempotencyStore` on SQLite (``aiosqlite``)."""

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
        if seen_absent and await self._insert(params):
            return Claim(ClaimResult.CLAIMED)
        return await self._claim(ref, params, now)

    async def lookup(self, ref: KeyRef, *, now: datetime) -> Claim | None:
        row = await self._read(key_params(ref))
        if row is None:
            return Claim(ClaimResult.ABSENT)
        return held(row, now)

    async def _claim_or_find(self, ref: KeyRef, params: dict[str, Any], now: datetime) -> Any:
        row = await self._read(params)
        if row is None:
            # None: inserted by another request since our read; read again
            return Claim(ClaimResult.CLAIMED) if await self._insert(params) else None
        found = held(row, now)
        return found if found is not None else row

    async def _read(self, params: dict[str, Any]) -> KeyRow | None:
        """The key's row (``None``: no row), as one statement on its own."""
        form = KEY_READ.for_driver(self.database.engine.dialect)
        arguments = form.arguments(params)
        records = await self.database.on_autocommit_driver(
            lambda driver: driver.read_now(form.sql, arguments)
        )
        rows = form.rows(records)
        return KeyRow(*rows[0]) if rows else None

    async def _insert(self, params: dict[str, Any]) -> bool:
        """Whether this request inserted the claim: alone, in its own implicit
        transaction, the conditional insert is the whole claim."""
        form = CLAIM.for_driver(self.database.engine.dialect)
        arguments = form.arguments(params)
        inserted = await self.database.on_autocommit_driver(
            lambda driver: driver.write_alone(form.sql, arguments)
        )
        return bool(inserted)

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
        """``COMPLETE`` in the session's write transaction, on its driver connection:
        the same statement and conditions, without the ORM's execution around it."""
        connection = await session.connection()  # the transaction begun (BEGIN IMMEDIATE)
        driver: Any = (await connection.get_raw_connection()).driver_connection
        form = STORE.for_driver(self.database.engine.dialect)
        arguments = form.arguments(self._store_params(ref, owner, fingerprint, response, now))
        if not await driver.rows_in_transaction(form.sql, arguments):
            raise self._lease_lost(ref)

    async def _relax_durability(self, session: AsyncSession) -> None:
        """Nothing to relax: SQLite runs WAL with synchronous=NORMAL, no flush per commit."""

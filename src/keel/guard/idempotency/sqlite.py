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
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.sql import CLAIM_VALUES, READ, TABLE, SqlStore, held
from keel.guard.idempotency.store import Claim, ClaimResult

CLAIM = (
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

    async def _claim_or_find(self, ref: KeyRef, params: dict[str, Any], now: datetime) -> Any:
        rows = await self.database.rows(READ, params)
        row = rows[0] if rows else None
        if row is None:
            # None: inserted by another request since our read; read again
            return Claim(ClaimResult.CLAIMED) if await self._insert(params) else None
        found = held(row, now)
        return found if found is not None else row

    async def _insert(self, params: dict[str, Any]) -> bool:
        # Alone, in its own implicit transaction: the conditional insert is the whole claim.
        return bool(await self.database.alone(CLAIM, params))

    async def _relax_durability(self, session: AsyncSession) -> None:
        """Nothing to relax: SQLite runs WAL with synchronous=NORMAL, no flush per commit."""

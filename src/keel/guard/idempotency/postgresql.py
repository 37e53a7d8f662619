"""The PostgreSQL hot path of every keyed request: claiming a key, completing it.

A first keyed ``POST`` pays for two statements the unkeyed one does not: the
claim (a committed transaction of its own) and the completion (an ``UPDATE``
in the business transaction). Run through the ORM session they cost far more
in Python than on the server — session and transaction objects, result
processing, the pool's bookkeeping per statement — and that overhead, not the
database, is what made a keyed request far slower than an unkeyed one
(``bench/RESULTS.md``). So these two statements go to the asyncpg connection
underneath SQLAlchemy's pooled one, as hand-written, server-prepared queries
(asyncpg caches them per connection). Nothing else changes: the same rows, the
same conditions on owner and state — the claim commits on its own, the
completion runs inside the route's transaction, which must already be open.

The claim is ONE autocommit statement: the insert, and — only when it hit a
row — that row, read in the same statement (``CLAIM_OR_READ``). A replay or a
409 costs that one round trip too. Its commit does not wait for the WAL flush
(``set_config('synchronous_commit', 'off', true)`` scoped to the statement's
own transaction; see ``PostgresIdempotencyStore._relax_durability`` for why
that is safe). Before, the claim was a transaction of four round trips (``BEGIN``,
``SET LOCAL``, ``INSERT``, ``COMMIT``) plus a fifth for the read. The
replay lookup that runs before the limits (``replay.py``) is one autocommit
``SELECT`` on the same kind of connection. The rarer paths (taking over an
expired claim, release, settle, heartbeat) stay on the ORM in ``sql.py``.

The statements' ``state`` literals come from the claim state machine
(``store.TRANSITIONS``), like the ORM queries'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from keel.db.engine import Database
from keel.db.failures import is_unavailable
from keel.errors import DatabaseUnavailable
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.sql import KeyRow, SqlStore, headers_json, held
from keel.guard.idempotency.store import (
    Claim,
    ClaimResult,
    StoredResponse,
    Transition,
    source_of,
    target_of,
)

# The claim, or the row in its way, in one statement. The data-modifying CTE
# always runs; the SELECT of the existing row runs on the statement's snapshot,
# so a row committed by a racing claimer after that snapshot is not seen: the
# answer is then no row at all, which ``claim`` treats as "gone, try again".
# ``relaxed`` is referenced by both branches so the volatile set_config is
# evaluated whenever the statement answers anything.
CLAIM_OR_READ = f"""
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS setting),
claimed AS (
    INSERT INTO idempotency_keys
        (user_id, operation, key, org_id, state, owner, fingerprint,
         created_at, locked_until, expires_at)
    VALUES ($1, $2, $3, $4, '{target_of(Transition.CLAIM)}', $5, $6, $7, $8, $9)
    ON CONFLICT (user_id, operation, key) DO NOTHING
    RETURNING owner
)
SELECT true AS claimed, NULL AS state, claimed.owner, NULL AS fingerprint,
       NULL AS locked_until, NULL AS expires_at, NULL AS response_status,
       NULL AS response_headers, NULL AS response_body
FROM claimed, relaxed
UNION ALL
SELECT false, k.state, k.owner, k.fingerprint, k.locked_until, k.expires_at,
       k.response_status, k.response_headers, k.response_body
FROM idempotency_keys AS k, relaxed
WHERE k.user_id = $1 AND k.operation = $2 AND k.key = $3
  AND NOT EXISTS (SELECT 1 FROM claimed)
"""  # noqa: S608 — only the state machine's own constants are formatted in

READ = """
SELECT state, owner, fingerprint, locked_until, expires_at,
       response_status, response_headers, response_body
FROM idempotency_keys
WHERE user_id = $1 AND operation = $2 AND key = $3
"""

COMPLETE = f"""
UPDATE idempotency_keys
SET state = '{target_of(Transition.COMPLETE)}', fingerprint = $5, completed_at = $6,
    expires_at = $7, response_status = $8, response_headers = $9, response_body = $10
WHERE user_id = $1 AND operation = $2 AND key = $3 AND owner = $4
  AND state = '{source_of(Transition.COMPLETE)}'
RETURNING owner
"""  # noqa: S608 — likewise
RELAX_DURABILITY = text("SET LOCAL synchronous_commit TO OFF")


async def _driver(connection: AsyncConnection) -> Any:
    """The asyncpg connection under SQLAlchemy's (typed ``Any``: asyncpg ships no types)."""
    raw = await connection.get_raw_connection()
    return raw.driver_connection


@asynccontextmanager
async def _translated(connection: AsyncConnection) -> AsyncIterator[None]:
    try:
        yield
    except Exception as error:  # the request gets a 503, the pool a fresh connection
        if isinstance(error, DatabaseUnavailable) or not is_unavailable(error):
            raise
        await connection.invalidate()
        raise DatabaseUnavailable(
            "the database is not answering; retry shortly", retry_after=2
        ) from error


CLAIMED: Final = "claimed"


async def claim_or_read(
    database: Database, key: tuple[str, str, str], values: tuple[Any, ...]
) -> KeyRow | Literal["claimed"] | None:
    """Insert the key's claim, or read the row that is in the way: one round trip.

    Returns ``CLAIMED`` if this request made the claim, else the existing row
    (``None`` if it is gone, or was committed by a racing claimer after the
    statement's snapshot: the caller tries again). ``key`` is (user, operation,
    key); ``values`` is (org, owner, fingerprint, created_at, locked_until,
    expires_at).
    """

    async def claim(driver: Any) -> Any:
        return await driver.fetchrow(CLAIM_OR_READ, *key, *values)

    record = await database.on_autocommit_driver(claim)
    if record is None:
        return None
    if record[0]:
        return CLAIMED
    return KeyRow(*tuple(record)[1:])


async def read_key(database: Database, key: tuple[str, str, str]) -> KeyRow | None:
    """The key's row, read in autocommit on a pooled asyncpg connection (``None`` if absent)."""

    async def read(driver: Any) -> Any:
        return await driver.fetchrow(READ, *key)

    record = await database.on_autocommit_driver(read)
    return None if record is None else KeyRow(*record)


async def complete_in(
    session: AsyncSession,
    key: tuple[str, str, str],
    owner: str,
    values: tuple[str | None, datetime, datetime, int, str, bytes],
) -> bool | None:
    """The completion ``UPDATE`` in ``session``'s open transaction: ``True`` if it matched
    the claim, ``False`` if the claim is lost; ``None`` if the transaction has not
    reached the server yet (the caller uses the ORM, which opens it)."""
    connection = await session.connection()
    async with _translated(connection):
        driver = await _driver(connection)
        if not driver.is_in_transaction():
            return None
        return await driver.fetchval(COMPLETE, *key, owner, *values) is not None


class PostgresIdempotencyStore(SqlStore):
    """:class:`~keel.guard.idempotency.store.IdempotencyStore` on PostgreSQL (``asyncpg``).

    Insert first: a new key costs one statement (``CLAIM_OR_READ``), and so does a
    key that exists, whose row that statement returns; only an expired row is
    then taken over, through the ORM (``sql.py``).
    """

    async def claim(
        self,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str | None,
        now: datetime,
        seen_absent: bool = False,
    ) -> Claim:
        # ``seen_absent`` buys nothing here: the claim never reads before inserting.
        return await self._claim(ref, self._claim_params(ref, owner, fingerprint, now), now)

    async def _claim_or_find(self, ref: KeyRef, params: dict[str, Any], now: datetime) -> Any:
        values = (
            params["v_org"],
            params["v_owner"],
            params["v_fingerprint"],
            params["v_now"],
            params["v_locked_until"],
            params["v_expires_at"],
        )
        found = await claim_or_read(self.database, _key(ref), values)
        if found == CLAIMED:
            return Claim(ClaimResult.CLAIMED)
        live = held(found, now)
        return live if live is not None else found

    async def lookup(self, ref: KeyRef, *, now: datetime) -> Claim | None:
        row = await read_key(self.database, _key(ref))
        if row is None:
            return Claim(ClaimResult.ABSENT)
        return held(row, now)

    async def _relax_durability(self, session: AsyncSession) -> None:
        """Claims, releases and refusals commit without waiting for the WAL flush.

        Safe for exactly-once: a completion is an UPDATE that needs the claim row
        and commits synchronously, and PostgreSQL flushes WAL in order, so a
        durable completion implies a durable claim. A claim lost in a database
        crash only makes its request's completion fail and roll back; a lost
        release only leaves a claim to expire. It saves a disk flush per keyed
        request. (SQLite runs WAL with synchronous=NORMAL: no flush per commit.)
        """
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
        values = (
            fingerprint,
            now,
            now + self.retention,
            response.status,
            headers_json(response),
            response.body,
        )
        stored = await complete_in(session, _key(ref), owner, values)
        if stored is None:
            stored = await self._store(session, ref, owner, fingerprint, response, now)
        if not stored:
            raise self._lease_lost(ref)


def _key(ref: KeyRef) -> tuple[str, str, str]:
    return (ref.user_id, ref.operation, ref.key)

"""The idempotency store for a database: one store per backend, chosen from the URL."""

from __future__ import annotations

from datetime import datetime

from keel.db.engine import Database
from keel.errors import ConfigurationError
from keel.guard.idempotency.postgresql import PostgresIdempotencyStore
from keel.guard.idempotency.sqlite import SqliteIdempotencyStore


def store_for(
    database: Database, *, lease_seconds: float, retention_seconds: float
) -> PostgresIdempotencyStore | SqliteIdempotencyStore:
    """The store that speaks ``database``'s SQL: PostgreSQL through asyncpg, or SQLite."""
    if database.asyncpg:
        return PostgresIdempotencyStore(
            database, lease_seconds=lease_seconds, retention_seconds=retention_seconds
        )
    if database.dialect == "sqlite":
        return SqliteIdempotencyStore(
            database, lease_seconds=lease_seconds, retention_seconds=retention_seconds
        )
    raise ConfigurationError(
        f"idempotency keys need postgresql+asyncpg:// or sqlite+aiosqlite://, "
        f"not a {database.dialect} database"
    )


async def purge_expired(database: Database, now: datetime) -> int:
    """Delete expired keys; the periodic job and ``keel idempotency purge`` call this."""
    return await store_for(database, lease_seconds=0.0, retention_seconds=0.0).purge_expired(now)

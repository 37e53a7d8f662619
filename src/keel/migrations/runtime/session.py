"""The migrating connection: engine, lock, Alembic invocation, per-revision settings.

Shared by the runner (apply, rollback, restore), the dry run and status. Alembic
is sync; everything here runs inside ``AsyncConnection.run_sync`` on the one
connection that also holds the migration lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from keel.db.engine import create_engine as create_keel_engine
from keel.migrations.errors import MigrationError
from keel.migrations.runtime import backup, locking
from keel.migrations.script.graph import Scripts
from keel.migrations.sql import Timeouts

T = TypeVar("T")


def engine_for(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_keel_engine(url, timeout=30.0)
    # No asyncpg command_timeout here: statement_timeout bounds each statement instead.
    return create_async_engine(url, poolclass=NullPool)


@asynccontextmanager
async def connection_to(url: str) -> AsyncIterator[AsyncConnection]:
    engine = engine_for(url)
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


async def run_sync(url: str, function: Callable[[Connection], T]) -> T:
    async with connection_to(url) as connection:
        return await connection.run_sync(function)


@contextmanager
def locked(connection: Connection, url: str, wait_seconds: float) -> Iterator[None]:
    if connection.dialect.name == "postgresql":
        with locking.advisory_lock(connection, wait_seconds):
            yield
    else:
        with locking.file_lock(backup.sqlite_path(url), wait_seconds):
            yield


def revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def current_revision(connection: Connection) -> str | None:
    with connection.begin():
        return revision_of(connection)


def run_alembic(
    connection: Connection, scripts: Scripts, url: str, action: str, target: str
) -> None:
    config = scripts.config(url)
    config.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(config, target)
    else:
        command.downgrade(config, target)


def sqlite_pragma(connection: Connection, pragma: str) -> list[Any]:
    """Run a PRAGMA on the raw DBAPI connection, outside any transaction."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(pragma)
        return list(cursor.fetchall())
    finally:
        cursor.close()


@contextmanager
def foreign_keys_deferred(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off around a revision, checked before its commit.

    SQLite changes a table by rebuilding it (Alembic's batch mode), and with
    enforcement on, dropping the old copy of a referenced table fails. SQLite's
    documented procedure: switch enforcement off outside the transaction, run
    ``PRAGMA foreign_key_check`` before committing, switch it back on. The
    caller runs the check (:func:`check_foreign_keys`) inside the transaction.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    sqlite_pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        sqlite_pragma(connection, "PRAGMA foreign_keys=ON")


def check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise MigrationError(f"the revision leaves {len(broken)} broken foreign key reference(s)")


def set_timeouts(connection: Connection, timeouts: Timeouts) -> None:
    if connection.dialect.name == "postgresql":
        for statement in timeouts.statements():
            connection.exec_driver_sql(statement)

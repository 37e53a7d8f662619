"""Alembic, driven from code: the schema's revision and the plain upgrade/downgrade.

This is the engine under the safe runner (``runtime/runner.py``) and what
``keel serve`` checks at start (``require_head``): the schema at the code's
head, or behind it by contract revisions only — those run after the release
that ships them is promoted, so its code is written to serve the schema
before them. The migration scripts ship
inside the package, so ``keel migrate`` works from an installed wheel with no
``alembic.ini`` lying around. Alembic is sync; these
functions run it on a worker thread over a sync connection borrowed from the
async engine (the pattern of Alembic's own asyncio cookbook).
"""

from __future__ import annotations

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from keel.db.engine import Database
from keel.errors import SchemaBehind
from keel.migrations.script.graph import Kind, Scripts, alembic_config


def head_revision(url: str = "sqlite://") -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(database: Database) -> str | None:
    """The schema's revision. Through the database's guard, so a database that cannot
    answer (at ``keel serve``'s start, in the lifespan, in ``/ready``) is a
    ``DatabaseUnavailable`` with a clear message, never a driver's traceback."""
    async with database.connection() as connection:
        return await connection.run_sync(_current)


def contract_only_revisions(scripts: Scripts | None = None) -> frozenset[str]:
    """The revisions the head is reached from by contract revisions only (the head not
    among them): the schemas a release serves before its post-promotion migrations.

    A deploy runs a release's contract revisions only once that release is
    promoted and the old one has stopped (``keel deploy``'s migration cycle), so
    the release serves traffic on the schema before them. An expand revision
    still pending is one the code needs; a schema past the head, or off the
    graph, is not one the code knows. Computed from one read of the script
    directory (which imports every revision file: too slow for a readiness probe).
    """
    ordered = (scripts or Scripts()).all()  # one head: Scripts.head refuses several
    found: set[str] = set()
    for earlier, later in zip(reversed(ordered[:-1]), reversed(ordered[1:]), strict=True):
        if later.declared_kind is not Kind.CONTRACT:
            break
        found.add(earlier.revision)
    return frozenset(found)


def behind_by_contract_only(current: str | None, scripts: Scripts | None = None) -> bool:
    """Whether every revision between ``current`` and the head declares ``contract``."""
    return current is not None and current in contract_only_revisions(scripts)


async def _run(database: Database, action: str, target: str) -> None:
    config = alembic_config(database.url)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        if action == "upgrade":
            command.upgrade(config, target)
        else:
            command.downgrade(config, target)

    # No transaction around the run: Alembic opens one per revision
    # (``transaction_per_migration``), which is what lets a ``keel-transaction:
    # none`` revision step out of it with ``autocommit_block()`` for
    # ``CREATE INDEX CONCURRENTLY``. Whatever Alembic left open is committed here.
    async with database.engine.connect() as connection:
        await connection.run_sync(run)
        if connection.in_transaction():
            await connection.commit()


async def upgrade(database: Database, target: str = "head") -> None:
    await _run(database, "upgrade", target)


async def downgrade(database: Database, target: str) -> None:
    await _run(database, "downgrade", target)


async def require_head(database: Database) -> None:
    """Refuse to serve on a schema that is not the one this code was written for (its head,
    or before its contract revisions)."""
    current = await current_revision(database)
    head = head_revision(database.url)
    if current != head and not behind_by_contract_only(current):
        raise SchemaBehind(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `keel migrate apply` (or the raw `keel migrate upgrade`)"
        )

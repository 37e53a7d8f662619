"""Fresh, migrated databases for tests, on SQLite and PostgreSQL.

Migrating from empty for every test would dominate the run, so each backend
is migrated once into a template (a file for SQLite, a template database for
PostgreSQL, as Procrastinate's tests do) and every test gets a cheap copy.
Names carry the process id so concurrent test runs never share a database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from keel import migrations
from keel.db.engine import Database
from tests.support.services import PG_HOST, PG_PORT, need

BACKENDS = ("sqlite", "postgres")


def _pg_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    return f"{driver}://postgres@{PG_HOST}:{PG_PORT}/{name}"


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", database="postgres"
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    database = Database(url)
    try:
        await migrations.upgrade(database)
    finally:
        await database.dispose()


class Templates:
    """One migrated template per backend, made on first use."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._sqlite: Path | None = None
        self._pg: str | None = None

    def sqlite(self) -> Path:
        if self._sqlite is None:
            path = self.workdir / "template.db"
            asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
            self._sqlite = path
        return self._sqlite

    def postgres(self) -> str:
        need("PostgreSQL", PG_HOST, PG_PORT)
        if self._pg is None:
            name = f"keel_tpl_{os.getpid()}"
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}"'))
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
            asyncio.run(_migrate(_pg_url(name)))
            self._pg = name
        return self._pg

    def cleanup(self) -> None:
        if self._pg is not None:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self._pg}" WITH (FORCE)'))


@contextmanager
def fresh_database(templates: Templates, backend: str, workdir: Path) -> Iterator[str]:
    """Yields the URL of a new migrated database; drops it afterwards."""
    if backend == "sqlite":
        path = workdir / f"keel-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(templates.sqlite(), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = templates.postgres()
    name = f"keel_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield _pg_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def empty_database(backend: str, workdir: Path) -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / f'empty-{uuid.uuid4().hex[:8]}.db'}"
        return
    need("PostgreSQL", PG_HOST, PG_PORT)
    name = f"keel_e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database of this process's own, dropped (forcibly) afterwards;
    yields its name, for tests that reach it through a proxy of their own."""
    need("PostgreSQL", PG_HOST, PG_PORT)
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

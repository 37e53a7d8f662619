"""Fresh, migrated databases for tests, on SQLite and PostgreSQL.

Migrating from empty for every test would dominate the run, so each backend
is migrated once into a template (a file for SQLite, a template database for
PostgreSQL, as Procrastinate's tests do) and every test gets a cheap copy.
Names carry the process id so concurrent test runs never share a database.

A PostgreSQL copy is not that cheap: ``CREATE DATABASE`` and ``DROP DATABASE``
wait on the server's disk (up to seconds on a busy machine), and some three
hundred tests each need one. So :class:`PostgresClones` makes copies ahead of
need and drops used ones on a thread of its own, while the tests run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from keel import migrations
from keel.db.engine import Database
from tests.support.services import PG_HOST, PG_PORT, need

BACKENDS = ("sqlite", "postgres")

# A test database outlives no crash of the server, so its commits need not wait for the
# disk: a database-level setting (the shared server's configuration is left alone), set
# on each database made here because CREATE DATABASE does not copy it from the template.
NO_COMMIT_WAIT = 'ALTER DATABASE "{name}" SET synchronous_commit = off'
DROPS_AT_ONCE = 4


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


class PostgresClones:
    """Copies of one template database, made ahead of need; used ones dropped later.

    One thread with one admin connection does both, copies first (a test may be
    waiting for one); ``AHEAD`` copies wait ready so a test seldom waits for
    ``CREATE DATABASE``, and never for ``DROP``.
    """

    AHEAD = 2

    def __init__(self, template: str) -> None:
        self._template = template
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        # (priority, order, kind, name): a waiting test's copy goes before any drop.
        self._work: queue.PriorityQueue[tuple[int, int, str, str]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._failed_drops: list[str] = []
        self._thread = threading.Thread(target=self._run, name="keel-test-clones", daemon=True)
        self._thread.start()
        for _ in range(self.AHEAD):
            self._put("create", self._new_name())

    def _put(self, kind: str, name: str) -> None:
        priority = {"create": 0, "drop": 1, "stop": 2}[kind]
        self._work.put((priority, next(self._order), kind, name))

    @staticmethod
    def _new_name() -> str:
        return f"keel_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    def take(self) -> str:
        """A fresh copy of the template that no one else has; ordered a replacement."""
        self._put("create", self._new_name())
        try:
            found = self._ready.get(timeout=120)
        except queue.Empty:
            raise AssertionError("no PostgreSQL copy of the template was made in 120 s") from None
        if isinstance(found, BaseException):
            raise AssertionError("copying the template database failed") from found
        return found

    def release(self, name: str) -> None:
        """Drop ``name`` (with FORCE: a server the test started may still hold it) soon."""
        self._put("drop", name)

    def close(self) -> None:
        """Drop every copy made and used; returns when the thread has done so."""
        self._put("stop", "")
        self._thread.join(timeout=300)
        while not self._ready.empty():
            left = self._ready.get_nowait()
            if isinstance(left, str):
                asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{left}" WITH (FORCE)'))
        if self._failed_drops:
            raise AssertionError(f"test databases left behind: {self._failed_drops}")

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        # Drops that piled up go together, one connection each: the server's disk waits
        # of several DROP DATABASE overlap (a long queue at the session's end otherwise).
        pool = await asyncpg.create_pool(
            host=PG_HOST,
            port=PG_PORT,
            user="postgres",
            database="postgres",
            min_size=1,
            max_size=DROPS_AT_ONCE,
        )
        try:
            while True:
                _, _, kind, name = await asyncio.to_thread(self._work.get)
                if kind == "stop":
                    break
                if kind == "create":
                    try:
                        await pool.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
                        await pool.execute(NO_COMMIT_WAIT.format(name=name))
                        self._ready.put(name)
                    except Exception as error:
                        self._ready.put(error)  # the waiting test fails with it
                    continue
                names = [name, *self._more_drops(DROPS_AT_ONCE - 1)]
                results = await asyncio.gather(
                    *(pool.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)') for n in names),
                    return_exceptions=True,
                )
                self._failed_drops.extend(
                    f"{n}: {r!r}"
                    for n, r in zip(names, results, strict=True)
                    if isinstance(r, BaseException)
                )
        finally:
            await pool.close()

    def _more_drops(self, most: int) -> list[str]:
        """Up to ``most`` drops waiting right behind, and no other kind of work."""
        found: list[str] = []
        while len(found) < most:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item[2] != "drop":
                self._work.put(item)  # its priority and order keep it where it was
                break
            found.append(item[3])
        return found


class Templates:
    """One migrated template per backend, made on first use."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._sqlite: Path | None = None
        self._pg: str | None = None
        self._clones: PostgresClones | None = None

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
            asyncio.run(_admin(NO_COMMIT_WAIT.format(name=name)))
            asyncio.run(_migrate(_pg_url(name)))
            self._pg = name
        return self._pg

    def postgres_clones(self) -> PostgresClones:
        if self._clones is None:
            self._clones = PostgresClones(self.postgres())
        return self._clones

    def cleanup(self) -> None:
        if self._clones is not None:
            self._clones.close()
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
    clones = templates.postgres_clones()
    name = clones.take()
    try:
        yield _pg_url(name)
    finally:
        clones.release(name)


@contextmanager
def empty_database(backend: str, workdir: Path) -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / f'empty-{uuid.uuid4().hex[:8]}.db'}"
        return
    need("PostgreSQL", PG_HOST, PG_PORT)
    name = f"keel_e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(_admin(NO_COMMIT_WAIT.format(name=name)))
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

"""The idempotency key's two statements on SQLite's driver connection.

``OneHopConnection.read_now`` reads on the event loop from a reader that never
waits for a lock, and on the connection's thread when SQLite would make it wait;
``OneHopConnection.write_alone`` writes one statement under the writer turn
(``keel.db.sqlite_driver``). On a real SQLite file in WAL, with a second
connection standing in for another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table

from keel.db.engine import Database
from keel.db.sqlite_driver import one_hop_connect

METADATA = MetaData()
ROWS = Table("rows", METADATA, Column("id", Integer, primary_key=True), Column("label", String))
LABELS = "SELECT label FROM rows ORDER BY id"
ADD = "INSERT INTO rows (label) VALUES (?) RETURNING id"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}", timeout=2.0)
    async with db.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield db
    await db.dispose()


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call queued on an aiosqlite connection's thread, by name."""
    seen: list[str] = []
    queue = aiosqlite.Connection._execute

    async def spy(
        self: aiosqlite.Connection, fn: object, *args: object, **kwargs: object
    ) -> object:
        seen.append(getattr(fn, "__name__", type(fn).__name__))
        return await queue(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", spy)
    return seen


async def read_now(database: Database, sql: str) -> list[Any]:
    rows: list[Any] = await database.on_autocommit_driver(lambda driver: driver.read_now(sql, []))
    return rows


async def write_alone(database: Database, label: str) -> list[Any]:
    rows: list[Any] = await database.on_autocommit_driver(
        lambda driver: driver.write_alone(ADD, [label])
    )
    return rows


async def test_a_read_during_another_process_write_answers_at_once_with_the_last_commit(
    database: Database, tmp_path: Path, thread_calls: list[str]
) -> None:
    await write_alone(database, "committed")
    other = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)  # as another process
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO rows (label) VALUES ('not yet')")
        thread_calls.clear()
        started = time.monotonic()
        seen = await read_now(database, LABELS)
        # Far below the 2 s busy timeout: the writer made the reader wait for nothing.
        assert time.monotonic() - started < 0.5
        assert seen == [("committed",)]
        assert thread_calls == []  # read on the loop, no hop to the connection's thread
        other.execute("COMMIT")
        assert await read_now(database, LABELS) == [("committed",), ("not yet",)]
    finally:
        other.close()


async def test_a_read_sqlite_would_make_wait_waits_on_the_thread_while_the_loop_runs_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.db"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, label TEXT)")
    setup.close()
    # Another process holding the file in exclusive locking mode: under WAL, one of the
    # few things a reader has to wait for (SQLite's busy handler).
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO rows (label) VALUES ('held')")
    holder.execute("COMMIT")
    connection = one_hop_connect(str(path), timeout=2.0, isolation_level=None)
    await connection  # its thread started, the file opened
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(tick())
    asyncio.get_running_loop().call_later(0.3, holder.close)
    try:
        started = time.monotonic()
        seen = await connection.read_now(LABELS, [])
        waited = time.monotonic() - started
    finally:
        ticking.cancel()
        holder.close()
        await connection.close()
    assert seen == [("held",)]
    assert waited >= 0.25  # it did wait for the lock — on the thread, in busy_timeout
    assert ticks >= 10  # while the event loop went on serving


async def test_a_lone_write_on_the_driver_waits_for_the_open_transaction(
    database: Database, thread_calls: list[str]
) -> None:
    # Two connections opened first (their set-up runs on their threads), one per writer.
    await asyncio.gather(write_alone(database, "warm"), write_alone(database, "up"))
    held, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with database.write() as session:
            await session.execute(ROWS.insert().values(label="first"))
            held.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await held.wait()
    thread_calls.clear()
    alone = asyncio.create_task(write_alone(database, "second"))
    await asyncio.sleep(0.2)
    assert not alone.done()
    assert thread_calls == []  # in line for the writer turn, not polling SQLite's lock
    release.set()
    await holding
    assert await alone == [(4,)]
    assert await read_now(database, LABELS) == [("warm",), ("up",), ("first",), ("second",)]


async def test_a_lone_write_gives_its_turn_back_when_it_fails(database: Database) -> None:
    await write_alone(database, "first")
    with pytest.raises(sqlite3.IntegrityError):
        await database.on_autocommit_driver(
            lambda driver: driver.write_alone("INSERT INTO rows (id, label) VALUES (?, 'x')", [1])
        )
    assert await write_alone(database, "after") == [(2,)]  # the turn was free again

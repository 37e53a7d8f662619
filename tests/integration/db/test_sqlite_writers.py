"""SQLite's writers of one process: in line for their turn, one thread hop per statement.

On a real SQLite file (WAL, as Keel runs it): write transactions of one process
take the writer turn first come first served and give it back however they
end (``keel.db.writer_turns``); each statement is one call on the connection's
thread, a write transaction's statements after its first none (it holds the lock),
and its end no more than one (``keel.db.sqlite_driver``). The idempotency key's
two statements on the driver connection: ``read_now`` reads on the event loop
from a reader that never waits for a lock (and on the thread when SQLite would
make it wait), ``write_alone`` writes one statement under the writer turn.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select, update

from keel.db.engine import Database
from keel.db.sqlite_driver import one_hop_connect
from keel.errors import DatabaseUnavailable

METADATA = MetaData()
ROWS = Table("rows", METADATA, Column("id", Integer, primary_key=True), Column("label", String))
ADD = insert(ROWS).values(label=bindparam("label")).returning(ROWS.c.id)
RENAME = update(ROWS).where(ROWS.c.label == bindparam("old")).values(label=bindparam("new"))
LABELS = select(ROWS.c.label).order_by(ROWS.c.id)
LABELS_SQL = "SELECT label FROM rows ORDER BY id"
ADD_SQL = "INSERT INTO rows (label) VALUES (?) RETURNING id"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'writers.db'}", timeout=2.0)
    async with db.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield db
    await db.dispose()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
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


@asynccontextmanager
async def write_held_open(database: Database, label: str) -> AsyncIterator[None]:
    """A write transaction that has inserted ``label`` and stays open for the block."""
    held, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with database.write() as session:
            await session.execute(ADD, {"label": label})
            held.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    try:
        await held.wait()
        yield
    finally:
        release.set()
        await holding


async def labels(database: Database) -> list[str]:
    return [row.label for row in await database.rows(LABELS)]


async def test_writers_of_one_process_commit_in_the_order_they_asked(database: Database) -> None:
    # Every connection opened first, so each writer goes straight to its turn.
    async def touch() -> None:
        async with database.read() as session:
            await session.execute(select(1))
            await asyncio.sleep(0.05)

    await asyncio.gather(*(touch() for _ in range(8)))

    async def writer(index: int) -> None:
        async with database.write() as session:
            await session.execute(ADD, {"label": f"w{index}"})

    tasks = []
    async with write_held_open(database, "w0"):
        for index in range(1, 8):
            tasks.append(asyncio.create_task(writer(index)))
            await asyncio.sleep(0.02)  # each in line before the next asks
    await asyncio.gather(*tasks)
    assert await labels(database) == [f"w{index}" for index in range(8)]


async def test_a_transaction_that_fails_gives_its_turn_back(database: Database) -> None:
    async def failing() -> None:
        async with database.write() as session:
            await session.execute(ADD, {"label": "rolled back"})
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing()
    async with database.write() as session:  # would wait out the 2 s timeout: a 503
        await session.execute(ADD, {"label": "next"})
    await database.alone(ADD, {"label": "alone"})
    assert await labels(database) == ["next", "alone"]


async def test_a_lone_write_waits_for_the_open_transaction(database: Database) -> None:
    async with write_held_open(database, "first"):
        alone = asyncio.create_task(database.alone(ADD, {"label": "second"}))
        await asyncio.sleep(0.2)
        assert not alone.done()
    assert len(await alone) == 1
    assert await labels(database) == ["first", "second"]


async def test_a_writer_that_waits_past_the_timeout_is_unavailable(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}", timeout=0.3)
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    try:
        async with write_held_open(database, "slow"):
            with pytest.raises(DatabaseUnavailable):
                async with database.write() as session:
                    await session.execute(ADD, {"label": "late"})
    finally:
        await database.dispose()


async def test_a_statement_costs_at_most_one_call_on_the_connection_thread(
    database: Database, calls: list[str]
) -> None:
    await database.rows(LABELS)
    assert len(calls) == 1  # the SELECT; no rollback at checkin outside a transaction
    calls.clear()
    await database.alone(ADD, {"label": "a"})
    assert len(calls) == 1
    calls.clear()
    async with database.write() as session:
        added = (await session.execute(ADD, {"label": "b"})).scalar_one()
        renamed = await session.execute(RENAME, {"old": "a", "new": "c"})
    # BEGIN IMMEDIATE with the INSERT, then COMMIT; the UPDATE, under the lock, ran on the loop
    assert len(calls) == 2
    assert calls[-1] == "commit"
    assert added == 2
    assert renamed.rowcount == 1  # type: ignore[attr-defined]
    assert await labels(database) == ["c", "b"]


async def test_many_rows_in_one_statement_report_their_count(database: Database) -> None:
    async with database.write() as session:
        await session.execute(insert(ROWS), [{"label": "x"}, {"label": "y"}, {"label": "z"}])
        renamed = await session.execute(update(ROWS).where(ROWS.c.label != "y").values(label="xz"))
    assert renamed.rowcount == 2  # type: ignore[attr-defined]
    assert await labels(database) == ["xz", "y", "xz"]


async def test_a_lock_held_by_another_process_fails_the_first_statement_and_frees_the_turn(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    database = Database(f"sqlite+aiosqlite:///{path}", timeout=0.3)
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    other = sqlite3.connect(path, isolation_level=None)  # as another process would
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseUnavailable):
            await database.alone(ADD, {"label": "locked out"})
        with pytest.raises(DatabaseUnavailable):  # its BEGIN IMMEDIATE went with the INSERT
            async with database.write() as session:
                await session.execute(ADD, {"label": "locked out"})
        other.execute("ROLLBACK")
        async with database.write() as session:
            await session.execute(ADD, {"label": "after"})
        assert await labels(database) == ["after"]
    finally:
        other.close()
        await database.dispose()


async def read_now(database: Database, sql: str) -> list[Any]:
    rows: list[Any] = await database.on_autocommit_driver(lambda driver: driver.read_now(sql, []))
    return rows


async def write_alone(database: Database, label: str) -> list[Any]:
    rows: list[Any] = await database.on_autocommit_driver(
        lambda driver: driver.write_alone(ADD_SQL, [label])
    )
    return rows


async def test_a_read_during_another_process_write_answers_at_once_with_the_last_commit(
    database: Database, tmp_path: Path, calls: list[str]
) -> None:
    await write_alone(database, "committed")
    other = sqlite3.connect(tmp_path / "writers.db", isolation_level=None)  # as another process
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO rows (label) VALUES ('not yet')")
        calls.clear()
        started = time.monotonic()
        seen = await read_now(database, LABELS_SQL)
        # Far below the 2 s busy timeout: the writer made the reader wait for nothing.
        assert time.monotonic() - started < 0.5
        assert seen == [("committed",)]
        assert calls == []  # read on the loop, no hop to the connection's thread
        other.execute("COMMIT")
        assert await read_now(database, LABELS_SQL) == [("committed",), ("not yet",)]
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
        seen = await connection.read_now(LABELS_SQL, [])
        waited = time.monotonic() - started
    finally:
        ticking.cancel()
        holder.close()
        await connection.close()
    assert seen == [("held",)]
    assert waited >= 0.25  # it did wait for the lock — on the thread, in busy_timeout
    assert ticks >= 10  # while the event loop went on serving


async def test_a_lone_write_on_the_driver_waits_for_the_open_transaction(
    database: Database, calls: list[str]
) -> None:
    # Two connections opened first (their set-up runs on their threads), one per writer.
    await asyncio.gather(write_alone(database, "warm"), write_alone(database, "up"))
    async with write_held_open(database, "first"):
        calls.clear()
        alone = asyncio.create_task(write_alone(database, "second"))
        await asyncio.sleep(0.2)
        assert not alone.done()
        assert calls == []  # in line for the writer turn, not polling SQLite's lock
    assert await alone == [(4,)]
    assert await read_now(database, LABELS_SQL) == [("warm",), ("up",), ("first",), ("second",)]


async def test_a_lone_write_gives_its_turn_back_when_it_fails(database: Database) -> None:
    await write_alone(database, "first")
    with pytest.raises(sqlite3.IntegrityError):
        await database.on_autocommit_driver(
            lambda driver: driver.write_alone("INSERT INTO rows (id, label) VALUES (?, 'x')", [1])
        )
    assert await write_alone(database, "after") == [(2,)]  # the turn was free again

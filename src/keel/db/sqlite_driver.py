"""The aiosqlite connection under SQLAlchemy, one thread hop per statement.

aiosqlite runs each SQLite call on the connection's own thread and hands the
result back to the event loop. SQLAlchemy's adapter asks it for four such
calls per statement — make a cursor, execute, fetch the rows, close the cursor
— and each is a round trip through the thread and then through the event
loop's queue of ready callbacks. Under load that queue holds other requests'
work, so every hop of a write transaction waits its turn behind them while
the transaction holds SQLite's one write lock (``writer_turns.py``): a keyed
``POST /v1/recognitions`` held it across some twenty hops (bench/RESULTS.md,
issue 19).

:class:`OneHopConnection` is aiosqlite's connection whose cursor runs the whole
statement — cursor, execute, every row, close — as ONE call on the thread, and
keeps the rows, the description and the counts for SQLAlchemy to read without
going back; a write transaction's ``BEGIN IMMEDIATE`` goes in the same call as
its first statement. A statement's rows are fetched in full either way (the adapter's
client-side cursor does the same); Keel opens no server-side cursors.

It leans on ``aiosqlite.Connection._execute`` (queue a call on the connection's
thread), the method aiosqlite's own cursor uses; ``tests/integration/db``
checks the statements' results through it.

Two statements of a keyed request skip SQLAlchemy altogether: the key's read
(:meth:`OneHopConnection.read_now`, on the event loop, from a reader that never
waits for a lock) and its claim (:meth:`OneHopConnection.write_alone`, one hop
under the writer turn); ``keel.guard.idempotency.sqlite`` says why.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite

from keel.db.writer_turns import WriterTurns

T = TypeVar("T")

BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
"""The write transaction's BEGIN (``keel.db.engine``): sent with the statement after it."""

_Description = tuple[tuple[str, None, None, None, None, None, None], ...] | None


class OneHopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors cost one thread hop per statement, and
    which holds its process's writer turn (``writer_turns.py``) from just before
    its ``BEGIN IMMEDIATE`` until its transaction has ended."""

    def __init__(
        self,
        connector: Callable[[], sqlite3.Connection],
        iter_chunk_size: int,
        *,
        turns: WriterTurns | None = None,
        reader: Callable[[], sqlite3.Connection] | None = None,
    ) -> None:
        super().__init__(connector, iter_chunk_size)
        self._turns = turns
        self._held: WriterTurns | None = None
        # A BEGIN IMMEDIATE not sent yet: it goes with the transaction's first statement.
        self._begin: str | None = None
        # ``read_now``'s own connection to the same file (opened at its first read;
        # None for an in-memory database, which a second connection would not see).
        self._open_reader = reader
        self._reader: sqlite3.Connection | None = None
        self._trace: Callable[[str], object] | None = None

    async def take_turn(self) -> None:
        """Wait for the process's writer turn; held until :meth:`end_turn` (which the
        transaction's end calls)."""
        if self._turns is not None and self._held is None:
            await self._turns.acquire()
            self._held = self._turns

    def end_turn(self) -> None:
        """Give the writer turn back, if this connection holds it."""
        held, self._held = self._held, None
        if held is not None:
            held.release()

    async def commit(self) -> None:
        # A failed COMMIT leaves the transaction open: the turn goes with its rollback.
        if self._begin is None and self._in_transaction():
            await super().commit()
        self._begin = None  # a transaction that ran no statement: nothing to commit
        self.end_turn()

    async def rollback(self) -> None:
        try:
            if self._begin is None and self._in_transaction():
                await super().rollback()
        finally:
            self._begin = None
            self.end_turn()

    def _in_transaction(self) -> bool:
        """Whether SQLite has a transaction open here (read from any thread: it is
        SQLite's autocommit flag). Without one, sqlite3's ``commit`` and ``rollback``
        do nothing — and the pool's rollback at every checkin, after a COMMIT or a
        lone statement, would still cost a hop to learn it."""
        connection = self._connection
        return connection is not None and connection.in_transaction

    async def close(self) -> None:
        # The reader first: closed while this connection still keeps the file open,
        # it is never the last connection, which would checkpoint on the event loop.
        self._close_reader()
        try:
            await super().close()
        finally:
            self._begin = None
            self.end_turn()

    def stop(self) -> asyncio.Future[None] | None:
        self._close_reader()
        try:
            return super().stop()
        finally:
            self._begin = None
            self.end_turn()

    async def set_trace_callback(self, handler: Callable[[str], object] | None) -> None:
        """sqlite3's trace on this connection and on its reader: every statement either
        runs is seen (``tests/support/roundtrips.py`` counts them)."""
        self._trace = handler
        if self._reader is not None:
            self._reader.set_trace_callback(handler)
        await super().set_trace_callback(handler)  # type: ignore[arg-type]  # untyped there

    def cursor(self) -> OneHopCursor:  # type: ignore[override]  # no hop: made on use
        return OneHopCursor(self)

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(sqlite3_connection, *args)`` on the connection's thread."""
        # aiosqlite's queue onto its thread, the one its own cursor uses (untyped there).
        execute = cast(Callable[..., Awaitable[T]], self._execute)
        return await execute(call, self._conn, *args)

    async def read_now(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """The rows of one read-only statement on its own (its implicit transaction),
        read right here on the event loop when that cannot wait; else on the thread.

        Under WAL a reader never waits for the writer, nor a writer for it: it reads
        the last commit from the WAL and the file, with no lock anyone holds for
        long. It is read from a second connection to the file, opened with a busy
        timeout of 0, so what would have waited fails at once instead — the few
        cases where a WAL reader meets SQLite's busy handler (another process
        recovering the WAL index after a crash mid-commit, or holding the file in
        exclusive locking mode); the statement then runs on the connection's
        thread as any other, waiting up to ``busy_timeout`` there, not on the loop.
        The pooled connection keeps its ``busy_timeout``: turning it down and back
        around each read would cost two statements more. A reader never
        checkpoints (the committing writer does, on its thread), and it is closed
        before this connection, so its close is never the file's last one either.

        What remains on the loop is the read itself: an indexed lookup of a few
        pages, which SQLite copies from the OS page cache in microseconds; a hop to
        the thread costs more, and its answer waits behind the loop's other ready
        callbacks. Only for point reads on a hot path (the idempotency key): a
        statement that reads much holds the loop as long as it reads.
        """
        reader = self._reader_connection()
        if reader is not None:
            try:
                return reader.execute(sql, parameters).fetchall()
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
        return (await self.run(_run_statement, None, sql, parameters))[3]

    async def write_alone(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """The rows of one write statement on its own (SQLite's implicit transaction,
        which takes the write lock as ``BEGIN IMMEDIATE`` would), in one hop to the
        connection's thread, holding this process's writer turn around it.

        On the thread, not the loop: its commit may run a WAL checkpoint (it
        writes the database file and syncs it), and a lock held by another
        process is waited for in ``busy_timeout``. The connection is checked out
        before the turn is taken, as a transaction takes them (``writer_turns.py``).
        """
        await self.take_turn()
        try:
            return (await self.run(_run_statement, None, sql, parameters))[3]
        finally:
            self.end_turn()

    async def rows_in_transaction(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """The rows of one statement in the write transaction open on this connection,
        without SQLAlchemy's cursor and result around it: run as :meth:`statement`
        runs the session's own (with the BEGIN IMMEDIATE still waiting to be sent,
        on the thread; once the lock is held, right here)."""
        return (await self.statement(_run_statement, sql, parameters))[3]

    def _reader_connection(self) -> sqlite3.Connection | None:
        """The reader of :meth:`read_now`, opened on first use (None: no reader here)."""
        if self._reader is None and self._open_reader is not None:
            reader = self._open_reader()
            if self._trace is not None:
                reader.set_trace_callback(self._trace)
            self._reader = reader
        return self._reader

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def begin_with_next_statement(self, begin: str) -> None:
        """Send ``begin`` in the same call as the next statement: a write transaction's
        first statement follows its BEGIN IMMEDIATE at once (the writer turn already
        taken), so a hop of its own would only lengthen the time the lock is held. A
        BEGIN refused (another process holds the lock past ``busy_timeout``) fails
        that statement instead, with the same error."""
        self._begin = begin

    async def statement(self, call: Callable[..., T], sql: str, parameters: Any) -> T:
        """``call(sqlite3_connection, begin, sql, parameters)``, with the BEGIN waiting
        to be sent (or None).

        On the connection's thread — except inside a write transaction that already
        holds SQLite's write lock (its BEGIN IMMEDIATE went with an earlier statement,
        and this process's writer turn is held): there a statement waits for no lock
        (under WAL, readers never block the writer), so it runs right here, on the
        event loop, in microseconds. A hop would cost more, and — worse — each hop's
        answer waits behind every callback the loop has ready: under load the
        transaction held the lock for a few loop turns per statement, every writer
        in line waited for that, and the line grew faster than it drained (open-loop
        p99 in seconds). The COMMIT still goes to the thread: it may checkpoint.
        """
        begin, self._begin = self._begin, None
        connection = self._connection
        locked = self._held is not None and connection is not None and connection.in_transaction
        if begin is None and locked:
            return call(connection, None, sql, parameters)
        return await self.run(call, begin, sql, parameters)


class OneHopCursor:
    """The part of a DB-API cursor SQLAlchemy's aiosqlite adapter uses, awaitable.

    ``execute`` runs the statement to completion on the connection's thread
    (:func:`_run_statement`); the rows wait here for ``fetchall``.
    """

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> OneHopCursor:
        if sql == BEGIN_IMMEDIATE and not parameters:
            self._connection.begin_with_next_statement(sql)
            self.description, self.rowcount, self.lastrowid, self._rows = None, -1, None, []
            return self
        ran = await self._connection.statement(_run_statement, sql, parameters)
        self.description, self.rowcount, self.lastrowid, self._rows = ran
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneHopCursor:
        ran = await self._connection.statement(_run_many, sql, parameters)
        self.description, self.rowcount, self.lastrowid, self._rows = ran
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []

    async def setinputsizes(self, *_sizes: Any) -> None:
        """Nothing to set (sqlite3's own is a no-op too)."""


_Ran = tuple[_Description, int, int | None, list[Any]]


def _run_statement(
    connection: sqlite3.Connection, begin: str | None, sql: str, parameters: Any
) -> _Ran:
    if begin is not None:
        connection.execute(begin)
    cursor = connection.cursor()
    try:
        cursor.execute(sql, () if parameters is None else parameters)
        return _drained(cursor)
    finally:
        cursor.close()


def _run_many(
    connection: sqlite3.Connection,
    begin: str | None,
    sql: str,
    parameters: Iterable[Sequence[Any]],
) -> _Ran:
    if begin is not None:
        connection.execute(begin)
    cursor = connection.cursor()
    try:
        cursor.executemany(sql, parameters)
        return _drained(cursor)
    finally:
        cursor.close()


def _drained(cursor: sqlite3.Cursor) -> _Ran:
    description = cursor.description
    rows = cursor.fetchall() if description is not None else []
    # After the rows: a DML statement's ``RETURNING`` rows are counted as they are stepped.
    return description, cursor.rowcount, cursor.lastrowid, rows


def one_hop_connect(
    database: str, *, turns: WriterTurns | None = None, **kwargs: Any
) -> OneHopConnection:
    """:func:`aiosqlite.connect`, returning a :class:`OneHopConnection` (not yet
    started: SQLAlchemy's adapter awaits it, which starts its thread) whose
    write transactions take their turn in ``turns``."""

    def connector() -> sqlite3.Connection:
        # Used from the loop's thread too, never at the same time as from its own
        # (``OneHopConnection.statement``): every call is awaited before the next.
        connection: sqlite3.Connection = sqlite3.connect(
            database, **{**kwargs, "check_same_thread": False}
        )
        return connection

    def reader() -> sqlite3.Connection:
        # ``read_now``'s: used on the loop's thread only, and never waits for a lock
        # (timeout 0: SQLite's busy timeout); autocommit, as the pooled connections.
        options = {**kwargs, "timeout": 0.0, "isolation_level": None, "check_same_thread": False}
        connection: sqlite3.Connection = sqlite3.connect(database, **options)
        return connection

    in_memory = database in ("", ":memory:") or "mode=memory" in database
    connection = OneHopConnection(
        connector, iter_chunk_size=64, turns=turns, reader=None if in_memory else reader
    )
    # As SQLAlchemy does for aiosqlite's own connections: a pooled connection left
    # open must not keep the interpreter from exiting.
    connection._thread.daemon = True
    return connection


__all__ = ["BEGIN_IMMEDIATE", "OneHopConnection", "OneHopCursor", "one_hop_connect"]

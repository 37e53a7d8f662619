"""The engine, its sessions and the transaction boundaries.

``Database.write()`` is the unit of work: the domain write, its audit events
and the jobs it enqueues go through one session and commit together.
On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so a writer
never fails when a read lock would have to be upgraded, and the writers of one
process first queue for their turn in the process (``writer_turns.py``), so
only writers of other processes ever wait on ``busy_timeout``; reads keep the
default deferred ``BEGIN`` and never block writers under WAL.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Row, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.util.concurrency import await_, greenlet_spawn

from keel.db.failures import is_unavailable
from keel.db.prepared import PreparedRead, driver_rows
from keel.db.sqlite_driver import BEGIN_IMMEDIATE, OneHopConnection, one_hop_connect
from keel.db.writer_turns import WriterTurns
from keel.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from keel.resilience import BreakerGate

# Marks the write transactions (``Database.write``): on SQLite they begin IMMEDIATE, with
# asyncpg their BEGIN is sent when they start (``_begin_writes_at_once``).
_IMMEDIATE = "keel_sqlite_begin_immediate"
# A connection on which SQLite runs each statement as its own transaction (no BEGIN):
# for a lone statement, which its implicit transaction makes atomic and consistent.
_ALONE = "keel_sqlite_statement_alone"

T = TypeVar("T")


def _is_schema_missing(error: BaseException) -> bool:
    """A table the code expects is not there: the database was never migrated (or is behind)."""
    # Unwrapped driver errors first, from the hot paths on the driver connection.
    if getattr(error, "sqlstate", None) == "42P01":  # asyncpg's UndefinedTableError
        return True
    if isinstance(error, sqlite3.OperationalError):
        return "no such table" in str(error)
    if not isinstance(error, exc.DBAPIError):
        return False
    if getattr(error.orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    return "no such table" in str(error.orig)  # SQLite


def _in_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


def create_engine(
    url: str, *, pool_size: int = 10, timeout: float = 5.0, turns: WriterTurns | None = None
) -> AsyncEngine:
    """The engine for ``url``. On SQLite, ``turns`` queues the write transactions
    of this process (``writer_turns.py``); a fresh one when not given."""
    if url.startswith("sqlite"):
        pool: dict[str, Any] = {}
        if not _in_memory(url):
            # Each aiosqlite connection is a thread and a file handle opened with four
            # PRAGMAs and a function; the default pool's overflow closed every
            # connection past five at checkin, so 32 concurrent requests opened and
            # closed one (and its thread) every few requests. Kept, as on PostgreSQL.
            # (An in-memory database keeps its one connection: no pool to size.)
            pool = {"pool_size": 2 * pool_size, "max_overflow": 0, "pool_timeout": timeout}
        engine = create_async_engine(url, connect_args={"timeout": timeout}, **pool)
        _configure_sqlite(
            engine,
            busy_timeout_ms=int(timeout * 1000),
            turns=turns if turns is not None else WriterTurns(timeout=timeout),
        )
        return engine
    asyncpg_driver = "+asyncpg" in url
    connect_args: dict[str, Any] = {}
    if asyncpg_driver:
        connect_args = {"timeout": timeout, "command_timeout": 30}
    engine = create_async_engine(
        url,
        # Up to twice ``pool_size`` connections, as a pool of ``pool_size`` with as much
        # overflow allows, but each kept once opened: SQLAlchemy closes an overflow
        # connection at checkin, so a steady load above ``pool_size`` concurrent
        # requests opened and closed a connection (connect, authentication, the
        # driver's type set-up) for every few requests.
        pool_size=2 * pool_size,
        max_overflow=0,
        # asyncpg gets a local check instead of the ping's three round trips
        # (BEGIN, ``;``, ROLLBACK on every checkout); other drivers keep the ping.
        pool_pre_ping=not asyncpg_driver,
        pool_timeout=timeout,
        connect_args=connect_args,
    )
    if asyncpg_driver:
        _refuse_closed_on_checkout(engine)
        _begin_writes_at_once(engine)
    return engine


def _begin_writes_at_once(engine: AsyncEngine) -> None:
    """Send a write transaction's BEGIN when the transaction starts, not with its first
    statement through SQLAlchemy.

    SQLAlchemy's asyncpg adapter begins lazily, in its cursor; a statement sent
    straight to the asyncpg connection (:func:`transaction_driver`) would run
    before that BEGIN, in autocommit, outside the transaction. Begun here, the
    hot statements of a write transaction — even its first — go to the driver,
    inside it. The same round trips: the BEGIN was sent either way. Read
    sessions keep the lazy BEGIN (``query()`` sends none at all).
    """

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(_IMMEDIATE, False):
            return
        adapted: Any = connection.connection.dbapi_connection
        # The adapter's own start (its isolation level, its error translation), so it
        # knows the transaction it commits or rolls back; private, pinned by
        # tests/integration/db/test_transaction_driver.py.
        if adapted._transaction is None:
            await_(adapted._start_transaction())


def _refuse_closed_on_checkout(engine: AsyncEngine) -> None:
    """Replace the pre-ping's round trips with asyncpg's own view of its socket.

    An asyncpg connection learns that the server closed it (restart, idle
    timeout, terminated backend, a cut network path that sends a FIN or RST)
    as soon as the event loop reads the EOF, so ``is_closed()`` is a local check
    that catches what a pre-ping catches in practice; the pool then replaces the
    connection (a ``DisconnectionError`` raised on checkout makes it reconnect).
    A connection whose death the loop has not read yet fails its first
    statement instead: SQLAlchemy sees the closed asyncpg connection, marks the
    error ``connection_invalidated`` and discards the connection, and
    :meth:`Database._guard` turns the error into ``DatabaseUnavailable`` (503
    with ``Retry-After``), the same answer the ping would have led to a moment
    later. A path hidden by a silent network drop (no FIN, no RST) escapes
    both: the ping would have waited its own timeout too, and the statement's
    ``command_timeout`` bounds it here.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise exc.DisconnectionError("the pooled connection was closed by the server")


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int, turns: WriterTurns) -> None:
    sync_engine = engine.sync_engine
    connect = partial(one_hop_connect, turns=turns)

    @event.listens_for(sync_engine, "do_connect")
    def _one_hop(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        # SQLAlchemy's aiosqlite adapter around a connection that runs each statement
        # in one call on its thread instead of four (``sqlite_driver.py``).
        return dialect.loaded_dbapi.connect(*cargs, async_creator_fn=connect, **cparams)

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        # SQLite has no SHA-256; the audit append computes its chain hash in SQL with this.
        dbapi_connection.create_function("keel_sha256", 1, _sha256_hex, deterministic=True)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(_ALONE, False):
            return
        if not options.get(_IMMEDIATE, False):
            connection.exec_driver_sql("BEGIN")
            return
        # The writer turn first (released when the transaction ends), then SQLite's lock,
        # which no other writer of this process can be holding now.
        driver = cast(OneHopConnection, connection.connection.driver_connection)
        await_(driver.take_turn())
        try:
            connection.exec_driver_sql(BEGIN_IMMEDIATE)
        except BaseException:
            driver.end_turn()
            raise


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def on_pooled_driver(engine: AsyncEngine, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work`` on the asyncpg connection of a connection checked out of ``engine``'s pool.

    For hand-written statements on a hot path, without an ``AsyncConnection``
    around them: no BEGIN is sent, so each statement runs in autocommit. The
    checkout, ``work`` and the checkin run in ONE greenlet: SQLAlchemy's pool is
    synchronous code, and each ``greenlet_spawn`` around it makes a greenlet and
    switches into it — a checkout and a checkin spawned separately cost a
    measurable share of an enqueue (bench/bench_jobs.py). A connection
    that ``work`` found closed, or whose statement was cancelled, is
    invalidated, so the pool never hands it out again; the caller translates
    the error (:func:`keel.db.failures.is_unavailable`).
    """
    return await greenlet_spawn(_checkout_work_checkin, engine.sync_engine.pool, work)


def _untrustworthy(driver: Any, error: BaseException) -> bool:
    """Whether a driver connection that ``error`` interrupted must not be reused: it
    is closed, or its statement was cancelled mid-flight (asyncpg may still be
    cancelling it on the server when the connection would go back to the pool;
    aiosqlite's thread may still be running it)."""
    closed = getattr(driver, "is_closed", None)  # asyncpg's; aiosqlite has none
    return isinstance(error, asyncio.CancelledError) or (closed is not None and bool(closed()))


@asynccontextmanager
async def transaction_driver(session: AsyncSession) -> AsyncIterator[Any]:
    """The asyncpg connection under ``session``'s open write transaction, or ``None``.

    For a transaction's hot statements, as hand-written or precompiled SQL: a
    statement through the session costs about a third more Python than on the
    driver (``bench/RESULTS.md``). ``None`` when the session is not on asyncpg
    or its transaction has not begun on the server (not a :meth:`Database.write`
    session): the caller then runs the statement through the session, which
    begins it. A statement that finds the connection closed, or is cancelled
    mid-flight, invalidates it — the session then neither rolls back on it nor
    returns it to the pool — as SQLAlchemy does for its own statements; errors
    are translated by the :meth:`Database._guard` around the session.
    """
    if session.get_bind().dialect.driver != "asyncpg":
        yield None
        return
    connection, driver = await greenlet_spawn(_connection_and_driver, session.sync_session)
    if not driver.is_in_transaction():
        yield None
        return
    try:
        yield driver
    except BaseException as error:
        if _untrustworthy(driver, error):
            await greenlet_spawn(
                connection.invalidate, error if isinstance(error, Exception) else None
            )
        raise


def _connection_and_driver(session: Session) -> tuple[Connection, Any]:
    # One greenlet for both: the session's connection, then its driver's (no I/O once begun).
    connection = session.connection()
    return connection, connection.connection.driver_connection


def _checkout_work_checkin(pool: Pool, work: Callable[[Any], Awaitable[T]]) -> T:
    pooled = pool.connect()
    try:
        driver: Any = pooled.driver_connection
        try:
            return await_(work(driver))
        except BaseException as error:
            if _untrustworthy(driver, error):
                pooled.invalidate(error)
            raise
    finally:
        pooled.close()


class Database:
    """Owns the engine; hands out read and write sessions.

    Every session, connection and driver call goes through :meth:`_guard`: an error
    that means the database cannot serve (:func:`keel.db.failures.is_unavailable`)
    becomes :class:`DatabaseUnavailable` (503 with ``Retry-After``), and, when the
    app gave it one, the ``database`` circuit breaker counts it. While that breaker
    is open, calls fail at once instead of each waiting out the connect timeout
    against a server that is restarting.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        timeout: float = 5.0,
        breaker: BreakerGate | None = None,
    ) -> None:
        self.url = url
        # SQLite's writers of this process take turns before its file lock: every
        # BEGIN IMMEDIATE on the engine, and a lone write here (``alone``).
        self._turns = WriterTurns(timeout=timeout) if url.startswith("sqlite") else None
        self.engine = create_engine(url, pool_size=pool_size, timeout=timeout, turns=self._turns)
        self.dialect = self.engine.dialect.name
        # The driver-level hot paths (``on_autocommit_driver``, held drivers, the
        # worker's claim) exist only on PostgreSQL through asyncpg.
        self.asyncpg = self.dialect == "postgresql" and "+asyncpg" in url
        self._driver_rows = driver_rows(url)
        self.breaker = breaker
        """The ``database`` breaker's gate (None: nothing counted, nothing refused —
        the CLI and standalone tools)."""
        write_bind = self.engine.execution_options(**{_IMMEDIATE: True})
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        # PostgreSQL runs reads in READ COMMITTED, where every statement takes its own
        # snapshot even inside a transaction; a BEGIN and a COMMIT around them buy no
        # consistency and cost two round trips. ``query()`` sessions skip them there.
        # SQLite keeps its deferred BEGIN: in-process, free, and one snapshot for all.
        lookup_bind = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.asyncpg
            else self.engine
        )
        self._lookup = async_sessionmaker(lookup_bind, expire_on_commit=False)
        # One statement, its own transaction: PostgreSQL's autocommit; on SQLite no BEGIN
        # (its implicit per-statement transaction), which saves the BEGIN and the COMMIT.
        self._alone_bind = (
            lookup_bind if self.asyncpg else self.engine.execution_options(**{_ALONE: True})
        )
        self._writer = async_sessionmaker(write_bind, expire_on_commit=False)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._guard(), _transaction(self._reader()) as session:
            yield session

    @asynccontextmanager
    async def query(self) -> AsyncIterator[AsyncSession]:
        """A session for read-only statements on the request path (``GET`` routes,
        the token lookup): on PostgreSQL with asyncpg each statement runs on its
        own, without the BEGIN and COMMIT round trips of :meth:`read` (which the
        statements' READ COMMITTED snapshots make useless); elsewhere it is
        :meth:`read`. Never for writes or ``FOR UPDATE``: nothing is committed.
        """
        async with self._guard(), _transaction(self._lookup()) as session:
            yield session

    async def rows(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """The rows of one read-only Core statement, on a bare connection.

        For the hottest lookups (the token check of a cache miss, ``/v1/users/me``,
        the idempotency key's replay lookup): no ORM session, identity map or
        session transaction around one SELECT, about a third of the Python work of
        the same read through :meth:`query`. One round trip: the statement runs
        alone (:meth:`alone`).
        """
        return await self.alone(statement, params)

    async def fetch(self, read: PreparedRead, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """The rows of a :class:`~keel.db.prepared.PreparedRead`, as one statement alone.

        With asyncpg or aiosqlite the SQL SQLAlchemy compiled once runs on the
        pooled connection's driver (no ``Connection``, execution context or result
        object per call: about a third of :meth:`rows`' Python for the list page);
        with another driver :meth:`alone` runs the Core statement. Either way the
        rows index as SQLAlchemy's do, one round trip, errors translated by
        :meth:`_guard`.
        """
        run = self._driver_rows
        if run is None:
            return await self.alone(read.statement, params)
        statement = read.for_driver(self.engine.dialect)
        arguments = statement.arguments(params)
        records = await self.on_autocommit_driver(
            lambda driver: run(driver, statement.sql, arguments)
        )
        return statement.rows(records)

    async def alone(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run ONE Core statement as its own transaction and return its rows.

        A lone statement is atomic and sees one snapshot by itself; a BEGIN and a
        COMMIT around it would cost two more round trips (PostgreSQL autocommit;
        SQLite's implicit transaction, which a write takes as ``BEGIN IMMEDIATE``
        would: straight for the write lock, waiting ``busy_timeout`` for it).
        For writes whose every guarantee is in the statement itself (the
        idempotency claim's conditional insert); on SQLite a write (``INSERT``,
        ``UPDATE``, ``DELETE``) waits for its writer turn as :meth:`write` does.
        """
        if self._turns is None or not getattr(statement, "is_dml", False):
            async with self._guard(), self._alone_bind.connect() as connection:
                return (await connection.execute(statement, params)).all()
        # The connection first, then the turn — the order a transaction takes them in
        # (its turn comes at its BEGIN IMMEDIATE), so no writer holds the turn while
        # waiting for a connection that a writer waiting for the turn holds.
        async with (
            self._guard(),
            self._alone_bind.connect() as connection,
            self._turns.turn(),
        ):
            return (await connection.execute(statement, params)).all()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back on any error."""
        async with self._guard(), _transaction(self._writer()) as session:
            yield session

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection without a session, for hand-tuned hot paths (the
        idempotency claim); the caller runs its own transaction on it."""
        async with self._guard(), self.engine.connect() as connection:
            yield connection

    async def on_autocommit_driver(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work`` on the driver connection of a pooled connection, for
        autocommit statements on a hot path (``keel.jobs.enqueue`` into a database, a
        prepared read): asyncpg's, or aiosqlite's (isolation level None: autocommit).

        The connection comes from the main pool (:func:`on_pooled_driver`);
        errors go through :meth:`_guard` like any other.
        """
        async with self._guard():
            return await on_pooled_driver(self.engine, work)

    def held_autocommit_driver(self) -> HeldDriver:
        """One pooled connection's asyncpg connection, held for a run of autocommit
        statements (:class:`HeldDriver`); PostgreSQL with asyncpg only."""
        return HeldDriver(self)

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        gate = self.breaker
        if gate is not None and not gate.allow():
            raise DatabaseUnavailable(
                "the database is not answering (its circuit breaker is open); retry shortly",
                retry_after=gate.retry_after(),
                reason=BREAKER_OPEN,
            )
        try:
            yield
        except BaseException as error:
            if _is_schema_missing(error):
                if gate is not None:
                    gate.record_ignored()  # a deployment mistake, not an outage
                raise DatabaseUnavailable(
                    "the database has no Keel schema or is behind the code; "
                    "run `keel migrate apply`",
                    retry_after=30,
                ) from error
            unavailable = is_unavailable(error)
            if gate is not None:
                _record(gate, error, unavailable=unavailable)
            if unavailable and not isinstance(error, DatabaseUnavailable):
                raise DatabaseUnavailable(
                    "the database is not answering; retry shortly", retry_after=2
                ) from error
            raise
        else:
            if gate is not None:
                gate.record_success()

    async def ping(self) -> None:
        """``SELECT 1`` — raises when the database cannot answer."""
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def start(self) -> None:
        """Nothing to open: the pool connects on first use, so a database that is down at
        start makes the app unready, not unstartable. Here for the lifespan's one order."""

    async def stop(self) -> None:
        """Close every pooled connection (the lifespan's last step)."""
        await self.dispose()

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def _transaction(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """``session`` in one transaction: committed when the block ends, rolled back on any
    error, then closed — what ``async with session, session.begin()`` does, for less.

    The transaction begins in memory (its connection and BEGIN come with its first
    statement), so it needs no greenlet; and a session whose transaction ended holds
    no connection, so closing it only empties its identity map, in place. The
    ``AsyncSession`` context manager closed it in a task of its own (created, shielded,
    awaited: an extra turn of the event loop) and a greenlet, for every session.
    SQLAlchemy ends the transaction even when its COMMIT or ROLLBACK raises (the
    connection goes back to the pool, ``tests/integration/db/test_write_sessions.py``);
    should one ever be left open, the session gets the full close, to completion.
    """
    transaction = session.sync_session.begin()
    try:
        try:
            yield session
        except BaseException as error:
            await greenlet_spawn(transaction.__exit__, type(error), error, error.__traceback__)
            raise
        await greenlet_spawn(transaction.__exit__, None, None, None)
    finally:
        if session.sync_session.in_transaction():
            await session.__aexit__(None, None, None)  # closed to completion, even if cancelled
        else:
            session.sync_session.close()


BREAKER_OPEN = "breaker-open"
"""The ``reason`` of a :class:`DatabaseUnavailable` the breaker answered without a call."""


def _record(gate: BreakerGate, error: BaseException, *, unavailable: bool) -> None:
    """Tell the breaker how a guarded block that raised ``error`` went.

    A failure when the database could not serve; neither when the block was
    cancelled or another guard's breaker already refused it (nothing reached
    the database); a success otherwise — a constraint violation or a bug is
    the database answering.
    """
    refused = isinstance(error, DatabaseUnavailable) and error.extensions.get("reason") == (
        BREAKER_OPEN
    )
    if refused or not isinstance(error, Exception):
        gate.record_ignored()
    elif unavailable:
        gate.record_failure()
    else:
        gate.record_success()


class HeldDriver:
    """The asyncpg connection of ONE connection from the main pool, held across a
    run of autocommit statements, for a producer that sends many in a row (the
    :class:`keel.jobs.Enqueuer`).

    :meth:`Database.on_autocommit_driver` checks a connection out and back in
    for every statement, a sixth to a quarter of a single-row INSERT's time on
    the development box; held, that is paid once per run. The connection is
    checked out at the first statement and back in when the block ends. A
    statement that finds it closed, or is cancelled mid-flight (asyncpg may
    still be cancelling it on the server), discards it: the pool invalidates it
    and the next statement checks out a fresh one. Errors are translated as
    every other database call is (:meth:`Database._guard`).
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._pooled: PoolProxiedConnection | None = None
        self._driver: Any = None
        # One statement at a time on the one connection: tasks sharing the holder
        # queue here instead of meeting asyncpg's "another operation is in progress".
        self._turn = asyncio.Lock()

    async def __aenter__(self) -> HeldDriver:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work`` on the held asyncpg connection (checked out if none is held)."""
        async with self._turn, self._database._guard():
            if self._driver is None or self._driver.is_closed():
                await self.release()
                pool = self._database.engine.sync_engine.pool
                self._pooled = await greenlet_spawn(pool.connect)
                self._driver = self._pooled.driver_connection
            driver = self._driver
            try:
                return await work(driver)
            except BaseException as error:
                if _untrustworthy(driver, error):
                    await self.release(error)
                raise

    async def release(self, error: BaseException | None = None) -> None:
        """Check the held connection back in; invalidated if it is closed or ``error``
        says it cannot be trusted."""
        pooled, driver = self._pooled, self._driver
        self._pooled = self._driver = None
        if pooled is None:
            return
        if error is not None or driver.is_closed():
            await greenlet_spawn(pooled.invalidate, error)
        await greenlet_spawn(pooled.close)

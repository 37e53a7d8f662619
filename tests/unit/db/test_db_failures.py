"""The one classifier of database unavailability, over a table of errors as drivers make them.

Each row is an error as it reaches Keel — raw from asyncpg (the idempotency hot path, the
worker's own connections), wrapped by SQLAlchemy's asyncpg adapter and then by SQLAlchemy
(everything through a session), from sqlite3, or from the socket — and whether it means
"the database cannot serve now" (503, counted by the database breaker) or not (a
constraint, a bug: never 503, never the breaker's business).
"""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from keel.db.failures import as_unavailable, is_unavailable, sqlstate
from keel.errors import DatabaseUnavailable, NotFound

E = asyncpg.exceptions


def wrapped(driver_error: BaseException, *, invalidated: bool = False) -> exc.DBAPIError:
    """``driver_error`` as a session sees it: SQLAlchemy's asyncpg adapter re-raises it as
    its DB-API ``Error`` *from* the original, and SQLAlchemy wraps that in a
    ``DBAPIError`` whose ``orig`` it is (the adapter maps 57P03 to the generic ``Error``:
    the wrapper's type says nothing)."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(driver_error), driver_error)
    adapted.__cause__ = driver_error
    error = exc.DBAPIError("SELECT 1", None, adapted, connection_invalidated=invalidated)
    error.__cause__ = adapted
    return error


def sqlite_error(kind: type[sqlite3.Error], code: int) -> sqlite3.Error:
    error = kind("as sqlite3 raises it")
    error.sqlite_errorcode = code  # set by sqlite3 itself on every error it raises
    return error


def no_such_column() -> sqlite3.Error:
    """A real sqlite3 error, with the result code sqlite3 gives it (SQLITE_ERROR)."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("SELECT missing")
    except sqlite3.Error as error:
        return error
    finally:
        connection.close()
    raise AssertionError("the statement should have failed")


UNAVAILABLE = {
    # PostgreSQL, by SQLSTATE, raw from asyncpg
    "08006 connection failure": E.ConnectionFailureError("lost"),
    "08003 connection does not exist": E.ConnectionDoesNotExistError("closed mid-operation"),
    "08001 cannot establish": E.ClientCannotConnectError("refused"),
    "57P01 admin shutdown": E.AdminShutdownError("terminating connection"),
    "57P02 crash shutdown": E.CrashShutdownError("crash"),
    "57P03 cannot connect now": E.CannotConnectNowError("the database system is starting up"),
    "53300 too many connections": E.TooManyConnectionsError("too many clients"),
    "53100 disk full": E.DiskFullError("no space"),
    "53200 out of memory": E.OutOfMemoryError("oom"),
    # the same, as a session sees them
    "57P03 wrapped by SQLAlchemy": wrapped(E.CannotConnectNowError("starting up")),
    "57P01 wrapped by SQLAlchemy": wrapped(E.AdminShutdownError("terminating connection")),
    "08006 wrapped by SQLAlchemy": wrapped(E.ConnectionFailureError("lost")),
    "53300 wrapped by SQLAlchemy": wrapped(E.TooManyConnectionsError("too many clients")),
    # driver types without a SQLSTATE
    "asyncpg connection is closed": asyncpg.InterfaceError("connection is closed"),
    "asyncpg protocol broken by a FATAL": E.InternalClientError("cannot switch to state 11"),
    "invalidated by SQLAlchemy": wrapped(RuntimeError("whatever"), invalidated=True),
    "SQLAlchemy pool timeout": exc.TimeoutError("QueuePool limit reached"),
    "SQLAlchemy disconnection": exc.DisconnectionError("closed by the server"),
    "connection refused": ConnectionRefusedError(111, "Connection refused"),
    "connection reset": ConnectionResetError(104, "Connection reset by peer"),
    "OSError": OSError(113, "No route to host"),
    "TimeoutError": TimeoutError(),
    # SQLite, by result code
    "sqlite busy (database is locked)": sqlite_error(sqlite3.OperationalError, 5),
    "sqlite locked": sqlite_error(sqlite3.OperationalError, 6),
    "sqlite disk I/O error": sqlite_error(sqlite3.OperationalError, 10),
    "sqlite extended I/O error (IOERR_WRITE)": sqlite_error(sqlite3.OperationalError, 778),
    "sqlite disk full": sqlite_error(sqlite3.OperationalError, 13),
    "sqlite cannot open": sqlite_error(sqlite3.OperationalError, 14),
    "sqlite busy wrapped by SQLAlchemy": exc.OperationalError(
        "INSERT", None, sqlite_error(sqlite3.OperationalError, 5)
    ),
    # already decided
    "DatabaseUnavailable": DatabaseUnavailable("down"),
}

ANSWERED = {
    "23505 unique violation": E.UniqueViolationError("duplicate key"),
    "23505 wrapped by SQLAlchemy": wrapped(E.UniqueViolationError("duplicate key")),
    "23503 foreign key": wrapped(E.ForeignKeyViolationError("no such parent")),
    "22021 NUL in text": wrapped(E.CharacterNotInRepertoireError("invalid byte sequence")),
    "42P01 undefined table": wrapped(E.UndefinedTableError("no such table")),
    "40001 serialization failure": E.SerializationError("could not serialize"),
    "57014 statement cancelled": E.QueryCanceledError("canceling statement"),
    "asyncpg configuration error": E.ClientConfigurationError("bad option"),
    "asyncpg stale schema cache": E.OutdatedSchemaCacheError("cached plan must not change"),
    "sqlite syntax/column error (real)": no_such_column(),
    "sqlite constraint": sqlite_error(sqlite3.IntegrityError, 19),
    "sqlite constraint wrapped": exc.IntegrityError(
        "INSERT", None, sqlite_error(sqlite3.IntegrityError, 2067)
    ),
    "a bug": ValueError("not a database problem"),
    "a Keel refusal": NotFound("no such thing"),
    "cancellation": asyncio.CancelledError(),
    "SQLAlchemy error that is no outage": exc.ProgrammingError("SELECT", None, ValueError("x")),
}


@pytest.mark.parametrize("error", UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_errors_that_mean_the_database_cannot_serve_are_unavailable(error: BaseException) -> None:
    assert is_unavailable(error)
    translated = as_unavailable(error)
    assert isinstance(translated, DatabaseUnavailable)
    assert translated.status == 503
    assert translated.headers["Retry-After"]


@pytest.mark.parametrize("error", ANSWERED.values(), ids=ANSWERED.keys())
def test_errors_the_database_answered_are_not_unavailable(error: BaseException) -> None:
    assert not is_unavailable(error)
    assert as_unavailable(error) is None


def test_the_decision_reads_the_sqlstate_not_the_message() -> None:
    liar = E.UniqueViolationError("the database system is starting up")  # message says "down"
    assert not is_unavailable(liar)
    silent = E.CannotConnectNowError("")  # no message at all
    assert is_unavailable(silent)


def test_the_first_link_with_a_sqlstate_decides() -> None:
    # A duplicate reported on a connection that is, at the socket level, an OSError
    # chain: the server answered, so it is not an outage.
    duplicate = E.UniqueViolationError("duplicate key")
    duplicate.__cause__ = ConnectionResetError()
    assert not is_unavailable(wrapped(duplicate))


def test_a_cyclic_chain_ends() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert not is_unavailable(first)


def test_an_error_already_translated_is_kept() -> None:
    down = DatabaseUnavailable("down", retry_after=7)
    assert as_unavailable(down) is down


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (E.CannotConnectNowError("x"), "57P03"),
        (wrapped(E.AdminShutdownError("x")).orig, "57P01"),
        (ValueError("x"), None),
    ],
)
def test_sqlstate_is_read_from_the_driver_error(error: BaseException, expected: str | None) -> None:
    assert sqlstate(error) == expected

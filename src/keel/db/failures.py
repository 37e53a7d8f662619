"""Which database errors mean "the database cannot be reached right now".

One question with one answer for every path that talks to the database — the
unit of work, the idempotency hot path, the job store, readiness, the last-resort
error boundary: is this exception the database being unavailable (a ``503
database-unavailable`` with ``Retry-After``, counted by the ``database``
breaker), or something else (a constraint, a bug: never a breaker's business)?

It is decided by what the driver and the server *say*, never by message text,
which changes between versions and locales:

* **SQLSTATE**, wherever a link of the chain carries one (asyncpg's
  ``sqlstate``, psycopg's ``pgcode``): class ``08`` (connection exception),
  ``57P0x`` (operator intervention: ``57P01`` admin shutdown, ``57P02`` crash
  shutdown, ``57P03`` cannot connect now — the server is starting up or
  shutting down, ``57P04`` database dropped, ``57P05`` idle session timeout)
  and class ``53`` (insufficient resources: too many connections, out of
  memory, disk full). Any other SQLSTATE is the server answering, and decides
  "not unavailable" at once: ``23505`` is a duplicate, however it is wrapped.
* **SQLite's result code** (``sqlite3.Error.sqlite_errorcode``, primary code):
  busy, locked, out of memory, I/O error, disk full, cannot open, protocol.
* **Driver exception types** for failures that carry no SQLSTATE: a socket
  error (``OSError``, refused or reset connections), a timeout, asyncpg's
  ``InterfaceError`` for a closed connection (not its configuration errors) and
  ``InternalClientError`` for a connection whose protocol state a server's FATAL
  broke,
  SQLAlchemy's pool timeout and disconnection errors, and a ``DBAPIError``
  that SQLAlchemy marked ``connection_invalidated``.

SQLAlchemy wraps driver errors (``DBAPIError.orig``) and its asyncpg adapter
re-raises asyncpg's errors as generic DB-API ones ``from`` the original, so a
57P03 refused at connect time arrives as a bare ``DBAPIError`` whose type says
nothing; the chain is walked (``orig``, then ``__cause__``) until a link
decides. Cancellation is never unavailability.
"""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
from sqlalchemy import exc

from keel.errors import DatabaseUnavailable

UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53")
"""SQLSTATE classes (first two characters) that mean the database cannot serve."""
UNAVAILABLE_SQLSTATE_PREFIXES = ("57P0",)
"""Operator intervention: shutdown, crash, start-up, dropped database, idle timeout."""

UNAVAILABLE_SQLITE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
"""Primary SQLite result codes of a database file that cannot serve right now."""

_ASYNCPG_MISUSE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)
"""``InterfaceError`` subclasses that are Keel's or the operator's mistake, not an outage."""

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable: ConnectionError and socket errors
    TimeoutError,  # connect timeout; asyncio.TimeoutError is the same class
    exc.TimeoutError,  # the pool had no connection to give within its timeout
    exc.DisconnectionError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,  # a standby where a primary was wanted
)

_MAX_LINKS = 16  # a chain longer than this is not one a driver makes


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE a link carries (asyncpg ``sqlstate``, psycopg ``pgcode``), if any."""
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(error, attribute, None)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def sqlstate_is_unavailable(code: str) -> bool:
    return code[:2] in UNAVAILABLE_SQLSTATE_CLASSES or code.startswith(
        UNAVAILABLE_SQLSTATE_PREFIXES
    )


def _decide(link: BaseException) -> bool | None:
    """True or False if this link decides; None to look further down the chain."""
    if isinstance(link, DatabaseUnavailable):
        return True
    if isinstance(link, asyncio.CancelledError):
        return False
    code = sqlstate(link)
    if code is not None:
        return sqlstate_is_unavailable(code)
    if isinstance(link, sqlite3.Error):
        return _sqlite_unavailable(link)
    return _type_unavailable(link)


def _sqlite_unavailable(link: sqlite3.Error) -> bool | None:
    code = getattr(link, "sqlite_errorcode", None)  # set by sqlite3 on every error it raises
    if isinstance(code, int):
        return (code & 0xFF) in UNAVAILABLE_SQLITE_CODES  # extended codes keep the primary
    return None


def _type_unavailable(link: BaseException) -> bool | None:
    if isinstance(link, _UNAVAILABLE_TYPES):
        return True
    if isinstance(link, asyncpg.InterfaceError):
        return not isinstance(link, _ASYNCPG_MISUSE)
    if isinstance(link, asyncpg.exceptions.InternalClientError):
        # The connection's protocol state broke under it: a shutting-down server's FATAL
        # arriving between two statements makes the next one fail with "cannot switch to
        # state …". The connection is dead either way; a stale schema cache is not.
        return not isinstance(link, asyncpg.exceptions.OutdatedSchemaCacheError)
    if isinstance(link, exc.DBAPIError) and link.connection_invalidated:
        return True
    return None


def _next_link(link: BaseException) -> BaseException | None:
    if isinstance(link, exc.DBAPIError) and isinstance(link.orig, BaseException):
        return link.orig
    return link.__cause__


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached or cannot serve now.

    The first link of the chain (the error, its ``orig``, their ``__cause__``)
    that has something to say decides; an error none of them explains is not
    unavailability (it is a bug or bad input, and stays what it is).
    """
    link: BaseException | None = error
    seen: set[int] = set()
    for _ in range(_MAX_LINKS):
        if link is None or id(link) in seen:
            return False
        seen.add(id(link))
        verdict = _decide(link)
        if verdict is not None:
            return verdict
        link = _next_link(link)
    return False


def as_unavailable(
    error: BaseException, detail: str = "the database is not answering; retry shortly"
) -> DatabaseUnavailable | None:
    """``error`` as the one error every caller raises for it (503 with ``Retry-After``),
    or None when it is not unavailability. An error that already is one is kept."""
    if isinstance(error, DatabaseUnavailable):
        return error
    if not is_unavailable(error):
        return None
    return DatabaseUnavailable(detail, retry_after=2)


__all__ = [
    "UNAVAILABLE_SQLITE_CODES",
    "UNAVAILABLE_SQLSTATE_CLASSES",
    "UNAVAILABLE_SQLSTATE_PREFIXES",
    "as_unavailable",
    "is_unavailable",
    "sqlstate",
    "sqlstate_is_unavailable",
]

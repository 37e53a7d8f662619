"""Count the statements every pooled database connection sends, per request.

A round trip here is one statement the server executes: on PostgreSQL the
asyncpg protocol's own ``queries_count`` (every simple query, every bind and
execute, BEGIN and COMMIT included; a statement's one-off Parse is cached per
connection and not counted), on SQLite each statement sqlite3 traces (BEGIN,
COMMIT and PRAGMAs included). Both are read on the driver connection under
SQLAlchemy's pool, so the hand-written hot paths that bypass SQLAlchemy's
cursor events (``on_pooled_driver``, ``HeldDriver``) are counted too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.pool import ConnectionPoolEntry, Pool
from sqlalchemy.util.concurrency import await_


class RoundTrips:
    """Every connection any SQLAlchemy pool opens while installed, and its statements."""

    def __init__(self) -> None:
        self._protocols: list[Any] = []  # asyncpg protocols: their queries_count
        self._sqlite = 0  # statements traced on SQLite connections
        self._lock = threading.Lock()  # sqlite3 traces from aiosqlite's threads

    def total(self) -> int:
        """Statements sent so far on every connection seen."""
        with self._lock:
            return self._sqlite + sum(int(p.queries_count) for p in self._protocols)

    def _on_connect(self, dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        driver = dbapi_connection.driver_connection
        protocol = getattr(driver, "_protocol", None)
        if protocol is not None and hasattr(protocol, "queries_count"):
            with self._lock:
                self._protocols.append(protocol)
        elif hasattr(driver, "set_trace_callback"):  # aiosqlite
            await_(driver.set_trace_callback(self._traced))

    def _traced(self, statement: str) -> None:
        if statement.startswith("--"):  # a trigger's body, inside a counted statement
            return
        with self._lock:
            self._sqlite += 1


@contextmanager
def counting_round_trips() -> Iterator[RoundTrips]:
    """Watch every pool's new connections while the block runs (open the app inside it)."""
    counter = RoundTrips()
    event.listen(Pool, "connect", counter._on_connect)
    try:
        yield counter
    finally:
        event.remove(Pool, "connect", counter._on_connect)

"""The migration lock: concurrent migrators run one after the other.

PostgreSQL: a session-level advisory lock on a fixed key, taken on the very
connection that runs the revisions, so it is released when that connection
ends even if the process dies. SQLite: an exclusive ``flock`` on a file beside
the database, released by the kernel when the process exits.

Both are polled with a non-blocking try, not a blocking wait: the wait is
bounded by ``wait_seconds`` and a statement timeout on the server can never cut
it short. The poll interval is small against the length of any migration.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text

from keel.migrations.errors import MigrationLockTimeout

#: The pg_advisory_lock key: the ASCII bytes of "KEELMIGR" read as one bigint.
ADVISORY_KEY = 0x4B45454C4D494752
POLL_SECONDS = 0.1


def _poll(try_once: Callable[[], bool], wait_seconds: float, what: str) -> None:
    deadline = time.monotonic() + wait_seconds
    attempts = int(wait_seconds / POLL_SECONDS) + 2
    for _ in range(attempts):
        if try_once():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    raise MigrationLockTimeout(f"another migration holds {what}; gave up after {wait_seconds:g}s")


@contextmanager
def advisory_lock(connection: Connection, wait_seconds: float) -> Iterator[None]:
    """Hold PostgreSQL's migration advisory lock on ``connection`` for the block."""

    def try_once() -> bool:
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
        ).scalar_one()
        connection.commit()
        return bool(got)

    _poll(try_once, wait_seconds, "the PostgreSQL advisory lock")
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
        connection.commit()


def lock_path(database_path: Path) -> Path:
    return database_path.with_name(database_path.name + ".migrate.lock")


@contextmanager
def file_lock(database_path: Path, wait_seconds: float) -> Iterator[None]:
    """Hold an exclusive flock on the file beside the SQLite database for the block."""
    path = lock_path(database_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def try_once() -> bool:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        _poll(try_once, wait_seconds, f"the lock file {path}")
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)

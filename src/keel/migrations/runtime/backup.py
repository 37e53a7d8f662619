"""Backups taken before a schema change, and restoring one.

SQLite: the online backup API (``sqlite3.Connection.backup``) copies a
consistent snapshot page by page while other connections keep reading and
writing; restoring runs the same API the other way, into the live file.
PostgreSQL: ``pg_dump -Fc`` (the custom format ``pg_restore`` reads) and
``pg_restore --clean --if-exists --single-transaction``. The password, if the
URL has one, travels in ``PGPASSWORD`` so it never shows in ``ps``.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from keel.migrations.errors import BackupFailed, RestoreFailed

PG_DUMP_TIMEOUT_SECONDS = 3600


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupFailed("an in-memory SQLite database cannot be backed up or locked")
    return Path(database)


def backup_name(url: str, revision: str | None, now: datetime) -> str:
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    suffix = "sqlite3" if url.startswith("sqlite") else "dump"
    return f"keel-{stamp}-at-{revision or 'base'}.{suffix}"


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    parsed = make_url(url)
    environment = dict(os.environ)
    if parsed.password is not None:
        environment["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), environment


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupFailed(f"{name} is not installed (apt-get install postgresql-client)")
    return found


def take(url: str, directory: Path, *, revision: str | None, now: datetime) -> Path:
    """Write a backup of the database at ``url`` into ``directory``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / backup_name(url, revision, now)
    if url.startswith("sqlite"):
        source = sqlite3.connect(sqlite_path(url))
        destination = sqlite3.connect(target)
        try:
            with destination:
                source.backup(destination)
        except sqlite3.Error as error:
            target.unlink(missing_ok=True)
            raise BackupFailed(f"SQLite backup failed: {error}") from error
        finally:
            destination.close()
            source.close()
        return target
    dsn, environment = _libpq(url)
    completed = subprocess.run(  # noqa: S603 - fixed binary, arguments as a list
        [_tool("pg_dump"), "--format=custom", f"--file={target}", f"--dbname={dsn}"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=PG_DUMP_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        target.unlink(missing_ok=True)
        raise BackupFailed(f"pg_dump failed: {completed.stderr.strip()[:500]}")
    return target


_TABLE_ENTRY = re.compile(r"^\d+;\s+\d+\s+\d+\s+TABLE\s+(\S+)\s+(\S+)\s", re.MULTILINE)


def tables_in_dump(path: Path) -> set[tuple[str, str]]:
    """(schema, table) pairs a ``pg_dump -Fc`` file creates."""
    completed = subprocess.run(  # noqa: S603 - fixed binary, arguments as a list
        [_tool("pg_restore"), "--list", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise RestoreFailed(f"not a pg_dump custom-format file: {completed.stderr.strip()[:300]}")
    return {(m.group(1), m.group(2)) for m in _TABLE_ENTRY.finditer(completed.stdout)}


def restore_postgres(url: str, path: Path) -> None:
    dsn, environment = _libpq(url)
    completed = subprocess.run(  # noqa: S603 - fixed binary, arguments as a list
        [
            _tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--no-owner",
            "--exit-on-error",
            f"--dbname={dsn}",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=PG_DUMP_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise RestoreFailed(f"pg_restore failed: {completed.stderr.strip()[:500]}")


def restore_sqlite(url: str, path: Path) -> None:
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    destination = sqlite3.connect(sqlite_path(url), timeout=30)
    try:
        source.execute("PRAGMA schema_version").fetchone()  # fails early on a non-database
        with destination:
            source.backup(destination)
    except sqlite3.Error as error:
        raise RestoreFailed(f"SQLite restore failed: {error}") from error
    finally:
        destination.close()
        source.close()


def before_change(url: str, current: str | None, directory: Path, *, now: datetime) -> Path | None:
    """The backup taken before a schema change; none while nothing is applied (nothing to lose)."""
    if current is None:
        return None
    return take(url, directory, revision=current, now=now)

"""``keel migrate dry-run``: run the pending revisions for real, then make it not have happened.

PostgreSQL has transactional DDL, so everything happens in one transaction
that is rolled back: upgrade to the target (noting, after each revision, the
locks this session holds on tables that existed before), downgrade back to
the start, upgrade again, roll back. SQLite runs the same sequence on a
snapshot copy of the file made with the online backup API, in a temporary
directory deleted afterwards. Neither writes a history row: a dry run leaves
no trace.

Limits worth knowing: ``CREATE INDEX CONCURRENTLY`` cannot run inside a
transaction, so a revision using it fails the dry run on PostgreSQL (the
report says so), and sequences advanced inside the transaction stay advanced
(Keel's ids are application-made, so its tables have none).
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, inspect, text

from keel.clock import Clock, SystemClock
from keel.migrations.errors import MigrationFailed
from keel.migrations.options import RunnerOptions
from keel.migrations.runtime import backup
from keel.migrations.runtime.session import (
    check_foreign_keys,
    foreign_keys_deferred,
    locked,
    revision_of,
    run_alembic,
    run_sync,
    set_timeouts,
)
from keel.migrations.script.graph import Scripts

_HELD_LOCKS = text(
    "SELECT c.relname AS relation, l.mode AS mode FROM pg_locks l "
    "JOIN pg_class c ON c.oid = l.relation "
    "WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted "
    "ORDER BY c.relname, l.mode"
)

SQLITE_LOCK = "the whole database file (SQLite's single writer) for each revision's transaction"


@dataclass
class RevisionTrial:
    revision: str
    seconds: float
    locks: list[str] = field(default_factory=list)


@dataclass
class DryRunReport:
    start_revision: str | None
    target_revision: str | None
    revisions: list[RevisionTrial] = field(default_factory=list)
    upgrade_seconds: float = 0.0
    downgrade_seconds: float = 0.0
    reupgrade_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "start_revision": self.start_revision,
            "target_revision": self.target_revision,
            "upgrade_seconds": round(self.upgrade_seconds, 4),
            "downgrade_seconds": round(self.downgrade_seconds, 4),
            "reupgrade_seconds": round(self.reupgrade_seconds, 4),
            "notes": self.notes,
            "revisions": [
                {"revision": r.revision, "seconds": round(r.seconds, 4), "locks": r.locks}
                for r in self.revisions
            ],
        }


def _trial(
    connection: Connection,
    url: str,
    scripts: Scripts,
    target: str,
    options: RunnerOptions,
    clock: Clock,
) -> DryRunReport:
    """Upgrade, downgrade, upgrade again on ``connection`` inside its open transaction."""
    postgres = connection.dialect.name == "postgresql"
    current = revision_of(connection)
    report = DryRunReport(start_revision=current, target_revision=None)
    existing = set(inspect(connection).get_table_names())
    set_timeouts(connection, options.timeouts)
    seen: set[str] = set()
    began = clock.monotonic()
    for item in scripts.pending(current, target):
        if not item.transactional:
            report.notes.append(
                f"stopped before {item.revision}: it runs outside a transaction "
                "(keel-transaction: none), which a dry run cannot undo"
            )
            break
        step_began = clock.monotonic()
        try:
            run_alembic(connection, scripts, url, "upgrade", item.revision)
        except Exception as error:
            raise MigrationFailed(
                f"dry run: revision {item.revision} failed: {type(error).__name__}: {error}",
                revision=item.revision,
            ) from error
        trial = RevisionTrial(item.revision, clock.monotonic() - step_began)
        if postgres:
            for row in connection.execute(_HELD_LOCKS):
                held = f"{row.relation}: {row.mode}"
                if row.relation in existing and held not in seen:
                    seen.add(held)
                    trial.locks.append(held)
        else:
            trial.locks.append(SQLITE_LOCK)
        report.revisions.append(trial)
    report.upgrade_seconds = clock.monotonic() - began
    report.target_revision = revision_of(connection)
    if report.revisions:
        began = clock.monotonic()
        try:
            run_alembic(connection, scripts, url, "downgrade", current or "base")
        except Exception as error:
            raise MigrationFailed(
                f"dry run: downgrade back to {current or 'base'} failed: {error}"
            ) from error
        report.downgrade_seconds = clock.monotonic() - began
        began = clock.monotonic()
        try:
            run_alembic(connection, scripts, url, "upgrade", report.target_revision or "base")
        except Exception as error:
            raise MigrationFailed(f"dry run: upgrade after downgrade failed: {error}") from error
        report.reupgrade_seconds = clock.monotonic() - began
    return report


async def dry_run(
    url: str,
    *,
    target: str = "heads",
    options: RunnerOptions | None = None,
    clock: Clock | None = None,
) -> DryRunReport:
    """What ``apply`` would do, timed, with the locks it takes; changes nothing."""
    options = options or RunnerOptions()
    clock = clock or SystemClock()
    scripts = Scripts(options.script_location)

    if url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="keel-dry-run-") as workdir:
            copy = Path(workdir) / "dry-run.db"
            source = sqlite3.connect(backup.sqlite_path(url))
            target_file = sqlite3.connect(copy)
            try:
                with target_file:
                    source.backup(target_file)
            finally:
                target_file.close()
                source.close()
            copy_url = f"sqlite+aiosqlite:///{copy}"

            def on_copy(connection: Connection) -> DryRunReport:
                with foreign_keys_deferred(connection), connection.begin():
                    report = _trial(connection, copy_url, scripts, target, options, clock)
                    check_foreign_keys(connection)
                    return report

            return await run_sync(copy_url, on_copy)

    def on_postgres(connection: Connection) -> DryRunReport:
        with locked(connection, url, options.lock_wait_seconds):
            transaction = connection.begin()
            try:
                return _trial(connection, url, scripts, target, options, clock)
            finally:
                transaction.rollback()

    return await run_sync(url, on_postgres)


__all__ = ["DryRunReport", "RevisionTrial", "dry_run"]

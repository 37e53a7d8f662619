"""``keel migrate restore``: put a backup back, under the migration lock, keeping the history."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import Connection, delete, inspect

from keel.clock import Clock, SystemClock
from keel.migrations.errors import RestoreFailed
from keel.migrations.options import RunnerOptions
from keel.migrations.runtime import backup, history
from keel.migrations.runtime.history import Action, Outcome, Step
from keel.migrations.runtime.runner import RunResult
from keel.migrations.runtime.session import current_revision, locked, run_sync


async def restore(
    url: str,
    backup_file: Path,
    *,
    take_backup: bool = True,
    options: RunnerOptions | None = None,
    clock: Clock | None = None,
) -> RunResult:
    """Replace the database with ``backup_file``, under the lock, keeping the history.

    The current state is backed up first (unless ``take_backup`` is false), so
    a restore of the wrong file can itself be undone. History rows written
    since the backup was taken are carried over, followed by a ``restore`` row.
    """
    options = options or RunnerOptions()
    clock = clock or SystemClock()
    run_id = str(uuid.uuid4())

    def run(connection: Connection) -> RunResult:
        if not backup_file.is_file():
            raise RestoreFailed(f"no backup file at {backup_file}")
        with locked(connection, url, options.lock_wait_seconds):
            with connection.begin():
                history.ensure(connection)
                saved = history.all_steps(connection)
            current = current_revision(connection)
            result = RunResult(run_id, Action.RESTORE, current, current)
            result.backup_file = (
                backup.before_change(url, current, options.backup_dir, now=clock.now())
                if take_backup
                else None
            )
            started, began = clock.now(), clock.monotonic()
            if connection.dialect.name == "postgresql":
                keep = backup.tables_in_dump(backup_file)
                with connection.begin():
                    # Tables made after the backup was taken: pg_restore --clean only drops
                    # what the dump contains, so these go first (the history table stays).
                    for name in inspect(connection).get_table_names(schema="public"):
                        if ("public", name) not in keep and name != history.TABLE_NAME:
                            connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
                backup.restore_postgres(url, backup_file)
            else:
                backup.restore_sqlite(url, backup_file)
            result.end_revision = current_revision(connection)
            step = Step(
                run_id=run_id,
                revision=result.end_revision,
                action=Action.RESTORE,
                outcome=Outcome.RESTORED,
                actor=options.who(),
                started_at=started,
                duration_seconds=clock.monotonic() - began,
                backup_file=str(backup_file.resolve()),
            )
            with connection.begin():
                history.ensure(connection)
                connection.execute(delete(history.history))
                for earlier in saved:
                    history.record(connection, earlier)
                history.record(connection, step)
            history.notify(step, options.listeners)
            result.steps.append(step)
            return result

    return await run_sync(url, run)

"""The safe runner: apply and rollback, with Alembic as the engine.

Every operation that changes the schema follows the same order:

1. take the migration lock (advisory lock / file lock) and only then read the
   current revision, so a migrator that waited finds the work already done;
2. refuse if an applied revision's file changed since it was applied;
3. back up (unless told not to, which only ``dev`` allows);
4. run each revision in its own transaction that starts with
   ``SET LOCAL lock_timeout`` and ``statement_timeout`` (PostgreSQL) and ends
   with its history row; a failure rolls back that revision only, records the
   failure and raises :class:`MigrationFailed`, leaving the schema at the last
   good revision.

Alembic gets the connection with a transaction already open, so its own
transaction handling stands aside (``_in_external_transaction``) and the
transaction boundaries are this module's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection

from keel.clock import Clock, SystemClock
from keel.migrations.errors import (
    ChecksumMismatch,
    MigrationError,
    MigrationFailed,
)
from keel.migrations.options import NoProgress, Progress, RunnerOptions
from keel.migrations.runtime import backup, history
from keel.migrations.runtime.history import Action, Outcome, Step
from keel.migrations.runtime.session import (
    check_foreign_keys,
    current_revision,
    foreign_keys_deferred,
    locked,
    run_alembic,
    run_sync,
    set_timeouts,
)
from keel.migrations.script.graph import Revision, Scripts


@dataclass
class RunResult:
    run_id: str
    action: Action
    start_revision: str | None
    end_revision: str | None
    steps: list[Step] = field(default_factory=list)
    backup_file: Path | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "action": self.action.value,
            "start_revision": self.start_revision,
            "end_revision": self.end_revision,
            "backup_file": str(self.backup_file) if self.backup_file else None,
            "steps": [step.as_dict() for step in self.steps],
        }


def _verify_checksums(
    connection: Connection,
    scripts: Scripts,
    current: str | None,
    *,
    run_id: str,
    action: Action,
    options: RunnerOptions,
    clock: Clock,
) -> None:
    """Refuse (and record the refusal) if an applied revision's file changed."""
    with connection.begin():
        recorded = history.recorded_checksums(connection)
    edited = [
        item.revision
        for item in scripts.applied(current)
        if item.revision in recorded and recorded[item.revision] != item.checksum
    ]
    if edited:
        refused = Step(
            run_id=run_id,
            revision=edited[0],
            action=action,
            outcome=Outcome.REFUSED,
            actor=options.who(),
            started_at=clock.now(),
            duration_seconds=0.0,
            checksum=scripts.get(edited[0]).checksum,
            error=f"edited after apply: {', '.join(edited)}",
        )
        with connection.begin():
            history.record(connection, refused)
        history.notify(refused, options.listeners)
        raise ChecksumMismatch(
            f"applied revision(s) {', '.join(edited)} changed since they were applied; "
            "restore the original file and write a new revision instead",
            revisions=edited,
        )


def _baseline(
    connection: Connection,
    scripts: Scripts,
    current: str | None,
    run_id: str,
    options: RunnerOptions,
    clock: Clock,
) -> list[Step]:
    """Record checksums of revisions applied before the runner kept history."""
    with connection.begin():
        recorded = history.recorded_checksums(connection)
        steps = [
            Step(
                run_id=run_id,
                revision=item.revision,
                action=Action.BASELINE,
                outcome=Outcome.RECORDED,
                actor=options.who(),
                started_at=clock.now(),
                duration_seconds=0.0,
                checksum=item.checksum,
            )
            for item in scripts.applied(current)
            if item.revision not in recorded
        ]
        for step in steps:
            history.record(connection, step)
    for step in steps:
        history.notify(step, options.listeners)
    return steps


def _take_backup(
    url: str, current: str | None, options: RunnerOptions, clock: Clock
) -> Path | None:
    return backup.before_change(url, current, options.backup_dir, now=clock.now())


def _step_through(
    connection: Connection,
    *,
    url: str,
    scripts: Scripts,
    revisions: list[Revision],
    action: Action,
    run_id: str,
    backup_file: Path | None,
    options: RunnerOptions,
    clock: Clock,
    progress: Progress,
) -> list[Step]:
    steps: list[Step] = []
    progress.start(len(revisions), action.value)
    try:
        for item in revisions:
            started, began = clock.now(), clock.monotonic()
            run_one = _one_revision if item.transactional else _one_revision_outside_transaction
            with foreign_keys_deferred(connection):
                step = run_one(
                    connection,
                    url=url,
                    scripts=scripts,
                    item=item,
                    action=action,
                    run_id=run_id,
                    backup_file=backup_file,
                    options=options,
                    clock=clock,
                    started=started,
                    began=began,
                )
            steps.append(step)
            history.notify(step, options.listeners)
            progress.advance(item.revision)
    finally:
        progress.finish()
    return steps


def _one_revision(
    connection: Connection,
    *,
    url: str,
    scripts: Scripts,
    item: Revision,
    action: Action,
    run_id: str,
    backup_file: Path | None,
    options: RunnerOptions,
    clock: Clock,
    started: datetime,
    began: float,
) -> Step:
    transaction = connection.begin()
    try:
        set_timeouts(connection, options.timeouts)
        if action is Action.UPGRADE:
            run_alembic(connection, scripts, url, "upgrade", item.revision)
        else:
            run_alembic(connection, scripts, url, "downgrade", item.down_revision or "base")
        check_foreign_keys(connection)
        step = Step(
            run_id=run_id,
            revision=item.revision,
            action=action,
            outcome=Outcome.APPLIED if action is Action.UPGRADE else Outcome.ROLLED_BACK,
            actor=options.who(),
            started_at=started,
            duration_seconds=clock.monotonic() - began,
            checksum=item.checksum,
            backup_file=str(backup_file) if backup_file else None,
        )
        history.record(connection, step)
        transaction.commit()
    except Exception as error:
        transaction.rollback()
        failed = Step(
            run_id=run_id,
            revision=item.revision,
            action=action,
            outcome=Outcome.FAILED,
            actor=options.who(),
            started_at=started,
            duration_seconds=clock.monotonic() - began,
            checksum=item.checksum,
            backup_file=str(backup_file) if backup_file else None,
            error=f"{type(error).__name__}: {error}"[:4000],
        )
        with connection.begin():
            history.record(connection, failed)
        history.notify(failed, options.listeners)
        at = current_revision(connection)
        raise MigrationFailed(
            f"revision {item.revision} failed and was rolled back; "
            f"the schema stays at {at or 'base'}: {failed.error}",
            revision=item.revision,
            schema_at=at,
        ) from error
    return step


def _one_revision_outside_transaction(
    connection: Connection,
    *,
    url: str,
    scripts: Scripts,
    item: Revision,
    action: Action,
    run_id: str,
    backup_file: Path | None,
    options: RunnerOptions,
    clock: Clock,
    started: datetime,
    began: float,
) -> Step:
    """A ``keel-transaction: none`` revision: Alembic's own transaction, so that
    ``autocommit_block()`` (``CREATE INDEX CONCURRENTLY``) works; session-wide timeouts."""
    step = Step(
        run_id=run_id,
        revision=item.revision,
        action=action,
        outcome=Outcome.APPLIED if action is Action.UPGRADE else Outcome.ROLLED_BACK,
        actor=options.who(),
        started_at=started,
        duration_seconds=0.0,
        checksum=item.checksum,
        backup_file=str(backup_file) if backup_file else None,
    )
    postgres = connection.dialect.name == "postgresql"
    try:
        if postgres:
            with connection.begin():
                for statement in options.timeouts.statements(local=False):
                    connection.exec_driver_sql(statement)
        target = item.revision if action is Action.UPGRADE else item.down_revision or "base"
        run_alembic(connection, scripts, url, action.value, target)
        if connection.in_transaction():
            connection.commit()
    except Exception as error:
        if connection.in_transaction():
            connection.rollback()
        at = current_revision(connection)
        failed = replace(
            step,
            outcome=Outcome.FAILED,
            duration_seconds=clock.monotonic() - began,
            error=f"{type(error).__name__}: {error}"[:4000],
        )
        with connection.begin():
            history.record(connection, failed)
        history.notify(failed, options.listeners)
        raise MigrationFailed(
            f"revision {item.revision} (run outside a transaction) failed; "
            f"the schema is at {at or 'base'}: {failed.error}",
            revision=item.revision,
            schema_at=at,
        ) from error
    finally:
        if postgres:
            with connection.begin():
                connection.exec_driver_sql("RESET lock_timeout")
                connection.exec_driver_sql("RESET statement_timeout")
    step = replace(step, duration_seconds=clock.monotonic() - began)
    with connection.begin():
        history.record(connection, step)
    return step


# --- apply and rollback --------------------------------------------------------

# Which revisions a run steps through, given the schema's revision once the lock is held.
Choose = Callable[[str | None], list[Revision]]


async def _run(
    url: str,
    action: Action,
    scripts: Scripts,
    choose: Choose,
    *,
    take_backup: bool,
    options: RunnerOptions,
    clock: Clock,
    progress: Progress,
) -> RunResult:
    """The order every schema change follows (see the module docstring), for either direction."""
    run_id = str(uuid.uuid4())

    def run(connection: Connection) -> RunResult:
        with locked(connection, url, options.lock_wait_seconds):
            with connection.begin():
                history.ensure(connection)
            current = current_revision(connection)
            _verify_checksums(
                connection,
                scripts,
                current,
                run_id=run_id,
                action=action,
                options=options,
                clock=clock,
            )
            result = RunResult(run_id, action, current, current)
            if action is Action.UPGRADE:
                result.steps.extend(_baseline(connection, scripts, current, run_id, options, clock))
            revisions = choose(current)
            if not revisions:
                return result
            result.backup_file = _take_backup(url, current, options, clock) if take_backup else None
            result.steps.extend(
                _step_through(
                    connection,
                    url=url,
                    scripts=scripts,
                    revisions=revisions,
                    action=action,
                    run_id=run_id,
                    backup_file=result.backup_file,
                    options=options,
                    clock=clock,
                    progress=progress,
                )
            )
            result.end_revision = current_revision(connection)
            return result

    return await run_sync(url, run)


async def apply(
    url: str,
    *,
    target: str = "heads",
    take_backup: bool = True,
    options: RunnerOptions | None = None,
    clock: Clock | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Upgrade to ``target`` under the lock, after a backup, one transaction per revision."""
    options = options or RunnerOptions()
    scripts = Scripts(options.script_location)
    return await _run(
        url,
        Action.UPGRADE,
        scripts,
        lambda current: scripts.pending(current, target),
        take_backup=take_backup,
        options=options,
        clock=clock or SystemClock(),
        progress=progress or NoProgress(),
    )


async def rollback(
    url: str,
    *,
    to: str,
    take_backup: bool = True,
    options: RunnerOptions | None = None,
    clock: Clock | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Downgrade to revision ``to`` (or ``base``), newest first, with the lock and a backup."""
    options = options or RunnerOptions()
    scripts = Scripts(options.script_location)
    if to != "base":
        scripts.get(to)  # UnknownRevision before taking any lock

    def undo(current: str | None) -> list[Revision]:
        if (
            to != "base"
            and current is not None
            and to not in {item.revision for item in scripts.applied(current)}
        ):
            raise MigrationError(f"revision {to} is not below the current {current}")
        return scripts.between(current, to)

    return await _run(
        url,
        Action.DOWNGRADE,
        scripts,
        undo,
        take_backup=take_backup,
        options=options,
        clock=clock or SystemClock(),
        progress=progress or NoProgress(),
    )

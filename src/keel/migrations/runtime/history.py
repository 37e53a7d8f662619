"""The migration history table and the listeners told about every run.

``keel_migration_history`` lives outside Alembic's revision chain, as
``alembic_version`` does: it has to exist before the first revision runs (to
record that run, or its failure), and it must survive ``rollback --to base``
and a restore, which are exactly the moments an operator needs it. The runner
creates it with ``CREATE TABLE IF NOT EXISTS`` under the migration lock. It is
on its own ``MetaData`` so it never appears in the models' autogenerate diff.

Each row is one step: a revision applied, failed or rolled back, a baseline
(a revision found applied with no checksum on record) or a restore. A
successful upgrade's row is written in the revision's own transaction, so the
row exists if and only if the schema change does.

``RunnerOptions.listeners`` is the hook for the audit log: every recorded step
is passed to each of those callables after it is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)

TABLE_NAME = "keel_migration_history"

metadata = MetaData()

history = Table(
    TABLE_NAME,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("revision", String(64), nullable=True),
    Column("action", String(20), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("checksum", String(64), nullable=True),
    Column("backup_file", Text, nullable=True),
    Column("error", Text, nullable=True),
)


class Action(StrEnum):
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    BASELINE = "baseline"
    RESTORE = "restore"


class Outcome(StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    REFUSED = "refused"
    ROLLED_BACK = "rolled_back"
    RECORDED = "recorded"
    RESTORED = "restored"


@dataclass(frozen=True)
class Step:
    run_id: str
    revision: str | None
    action: Action
    outcome: Outcome
    actor: str
    started_at: datetime
    duration_seconds: float
    checksum: str | None = None
    backup_file: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "revision": self.revision,
            "action": self.action.value,
            "outcome": self.outcome.value,
            "actor": self.actor,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 4),
            "checksum": self.checksum,
            "backup_file": self.backup_file,
            "error": self.error,
        }


Listener = Callable[[Step], None]


def ensure(connection: Connection) -> None:
    metadata.create_all(connection, checkfirst=True)


def exists(connection: Connection) -> bool:
    from sqlalchemy import inspect  # noqa: PLC0415 - keeps the module's import list short

    return inspect(connection).has_table(TABLE_NAME)


def record(connection: Connection, step: Step) -> None:
    """Insert ``step`` in the connection's current transaction."""
    values = step.as_dict()
    values["started_at"] = step.started_at
    values["duration_seconds"] = step.duration_seconds
    connection.execute(insert(history).values(**values))


def notify(step: Step, listeners: Sequence[Listener]) -> None:
    for listener in listeners:
        listener(step)


def _step(row: object) -> Step:
    mapping = row._mapping  # type: ignore[attr-defined]
    started = mapping["started_at"]
    return Step(
        run_id=mapping["run_id"],
        revision=mapping["revision"],
        action=Action(mapping["action"]),
        outcome=Outcome(mapping["outcome"]),
        actor=mapping["actor"],
        started_at=started,
        duration_seconds=float(mapping["duration_seconds"]),
        checksum=mapping["checksum"],
        backup_file=mapping["backup_file"],
        error=mapping["error"],
    )


def recent(connection: Connection, limit: int = 10) -> list[Step]:
    if not exists(connection):
        return []
    rows = connection.execute(select(history).order_by(history.c.id.desc()).limit(limit))
    return [_step(row) for row in rows]


def all_steps(connection: Connection) -> list[Step]:
    if not exists(connection):
        return []
    return [_step(row) for row in connection.execute(select(history).order_by(history.c.id))]


def recorded_checksums(connection: Connection) -> dict[str, str]:
    """The checksum each revision had when it was last applied (or baselined)."""
    found: dict[str, str] = {}
    for step in all_steps(connection):
        if step.revision is None or step.checksum is None:
            continue
        if step.action in (Action.UPGRADE, Action.BASELINE) and step.outcome in (
            Outcome.APPLIED,
            Outcome.RECORDED,
        ):
            found[step.revision] = step.checksum
    return found

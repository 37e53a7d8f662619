"""``keel migrate status``: current revision against head, checksums, the last runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from keel.migrations.options import RunnerOptions
from keel.migrations.runtime import history
from keel.migrations.runtime.history import Step
from keel.migrations.runtime.session import revision_of, run_sync
from keel.migrations.script.graph import Scripts


@dataclass
class ChecksumState:
    revision: str
    state: str  # "ok", "edited" or "unrecorded"
    recorded: str | None
    actual: str


@dataclass
class Status:
    current: str | None
    head: str | None
    pending: list[str]
    checksums: list[ChecksumState]
    recent: list[Step]

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def edited(self) -> list[str]:
        return [item.revision for item in self.checksums if item.state == "edited"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "head": self.head,
            "at_head": self.at_head,
            "pending": self.pending,
            "checksums": [vars(item) for item in self.checksums],
            "recent": [step.as_dict() for step in self.recent],
        }


async def status(url: str, *, options: RunnerOptions | None = None, limit: int = 10) -> Status:
    """Current revision against head, checksum verification and the last runs. Read-only."""
    options = options or RunnerOptions()
    scripts = Scripts(options.script_location)

    def run(connection: Connection) -> Status:
        with connection.begin():
            current = revision_of(connection)
            recorded = history.recorded_checksums(connection)
            recent = history.recent(connection, limit)
        checks = []
        for item in scripts.applied(current):
            known = recorded.get(item.revision)
            state = "unrecorded" if known is None else "ok" if known == item.checksum else "edited"
            checks.append(ChecksumState(item.revision, state, known, item.checksum))
        return Status(
            current=current,
            head=scripts.head,
            pending=[item.revision for item in scripts.pending(current)],
            checksums=checks,
            recent=recent,
        )

    return await run_sync(url, run)

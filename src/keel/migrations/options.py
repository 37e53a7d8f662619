"""How a migration run is configured and reported on."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from keel.migrations.runtime.history import Listener
from keel.migrations.sql import Timeouts
from keel.settings import Settings


class Progress(Protocol):
    """Told about each revision as it runs (the CLI draws a progress bar)."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, revision: str) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int, description: str) -> None:
        return None

    def advance(self, revision: str) -> None:
        return None

    def finish(self) -> None:
        return None


@dataclass(frozen=True)
class RunnerOptions:
    backup_dir: Path = Path("./keel-data/backups")
    lock_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 600.0
    lock_wait_seconds: float = 600.0
    script_location: Path | None = None
    actor: str | None = None
    #: Told about every recorded history step, after it is written (the audit log's hook).
    listeners: tuple[Listener, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RunnerOptions:
        values: dict[str, Any] = {
            "backup_dir": settings.migration_backup_dir,
            "lock_timeout_seconds": settings.migration_lock_timeout_seconds,
            "statement_timeout_seconds": settings.migration_statement_timeout_seconds,
            "lock_wait_seconds": settings.migration_lock_wait_seconds,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(self.lock_timeout_seconds, self.statement_timeout_seconds)

    def who(self) -> str:
        if self.actor:
            return self.actor
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return f"{user}@{socket.gethostname()}"

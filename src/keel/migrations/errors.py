"""The errors of the migration runner, one subtree under :class:`KeelError`."""

from __future__ import annotations

from keel.errors import KeelError


class MigrationError(KeelError):
    """Something the safe migration runner refused or could not do."""

    slug = "migration"
    title = "Migration error"


class MigrationFailed(MigrationError):
    """A revision failed; its transaction was rolled back, earlier revisions stay applied."""

    title = "Migration failed"


class UnknownRevision(MigrationError):
    title = "No such revision"


class ChecksumMismatch(MigrationError):
    """A revision file changed after it was applied (Flyway's validate step)."""

    title = "Applied revision was edited"


class MigrationLockTimeout(MigrationError):
    """Another migrator held the lock for longer than we were willing to wait."""

    title = "Migration lock not acquired"


class BackupFailed(MigrationError):
    title = "Backup failed"


class RestoreFailed(MigrationError):
    title = "Restore failed"


class LintFailed(MigrationError):
    title = "Migration lint failed"


class LinterUnavailable(MigrationError):
    """The squawk binary is not installed."""

    title = "squawk is not installed"

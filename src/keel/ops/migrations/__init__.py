"""The safe migration runner: plan, lint, dry-run, apply, rollback, restore, status.

Alembic stays the engine; this package adds what production needs around it —
a lock so migrators serialise, checksums so an applied revision is never
silently edited, a backup before every change, one transaction per revision
with automatic rollback, a history table, squawk-based linting and the
expand/contract discipline. ``keel.cli.migrate`` is its thin CLI.
"""

from keel.ops.migrations.dryrun import DryRunReport, dry_run
from keel.ops.migrations.errors import (
    BackupFailed,
    ChecksumMismatch,
    LinterUnavailable,
    LintFailed,
    MigrationError,
    MigrationFailed,
    MigrationLockTimeout,
    RestoreFailed,
    UnknownRevision,
)
from keel.ops.migrations.history import Action, Listener, Outcome, Step
from keel.ops.migrations.lint import Finding, LintReport, lint
from keel.ops.migrations.options import NoProgress, Progress, RunnerOptions
from keel.ops.migrations.plan import Plan, pending_kinds, plan
from keel.ops.migrations.restore import restore
from keel.ops.migrations.runner import RunResult, apply, rollback
from keel.ops.migrations.scripts import Kind, Revision, Scripts
from keel.ops.migrations.sql import Timeouts
from keel.ops.migrations.status import Status, status
from keel.ops.migrations.templates import new_revision

__all__ = [
    "Action",
    "BackupFailed",
    "ChecksumMismatch",
    "DryRunReport",
    "Finding",
    "Kind",
    "LintFailed",
    "LintReport",
    "LinterUnavailable",
    "Listener",
    "MigrationError",
    "MigrationFailed",
    "MigrationLockTimeout",
    "NoProgress",
    "Outcome",
    "Plan",
    "Progress",
    "RestoreFailed",
    "Revision",
    "RunResult",
    "RunnerOptions",
    "Scripts",
    "Status",
    "Step",
    "Timeouts",
    "UnknownRevision",
    "apply",
    "dry_run",
    "lint",
    "new_revision",
    "pending_kinds",
    "plan",
    "restore",
    "rollback",
    "status",
]

"""Schema migrations: the revision files, Alembic driving them, and the safe runner around it.

Laid out the way Alembic lays itself out:

``script/``
    The revisions as data: Alembic's script location (``env.py``,
    ``script.py.mako``, ``versions/``), the ordered graph with each file's
    checksum and declared kind (``graph.py``) and ``keel migrate new``'s
    templates.
``runtime/``
    Running them: the plain Alembic upgrade/downgrade and the schema's
    revision (``schema.py``, what ``keel serve`` checks at start), and the safe
    runner — a lock so migrators serialise, checksums so an applied revision is
    never silently edited, a backup before every change, one transaction per
    revision with automatic rollback, a history table, plan, dry-run, status
    and restore.
``operations/``
    Helpers revisions call (concurrent index builds).
``lint.py``, ``sql.py``
    squawk-based linting of each revision's offline SQL, and that rendering.

``keel.cli.migrate`` is the thin CLI over this package.
"""

from keel.migrations.errors import (
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
from keel.migrations.lint import Finding, LintReport, lint
from keel.migrations.options import NoProgress, Progress, RunnerOptions
from keel.migrations.runtime.dryrun import DryRunReport, dry_run
from keel.migrations.runtime.history import Action, Listener, Outcome, Step
from keel.migrations.runtime.plan import Plan, pending_kinds, plan
from keel.migrations.runtime.restore import restore
from keel.migrations.runtime.runner import RunResult, apply, rollback
from keel.migrations.runtime.schema import (
    behind_by_contract_only,
    contract_only_revisions,
    current_revision,
    downgrade,
    head_revision,
    require_head,
    upgrade,
)
from keel.migrations.runtime.status import Status, status
from keel.migrations.script.graph import Kind, Revision, Scripts
from keel.migrations.script.templates import new_revision
from keel.migrations.sql import Timeouts

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
    "behind_by_contract_only",
    "contract_only_revisions",
    "current_revision",
    "downgrade",
    "dry_run",
    "head_revision",
    "lint",
    "new_revision",
    "pending_kinds",
    "plan",
    "require_head",
    "restore",
    "rollback",
    "status",
    "upgrade",
]

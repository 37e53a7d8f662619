"""Migration runs in the audit log (``migration.applied`` / ``migration.failed``, system chain).

The runner calls its listeners synchronously after each history row; the
listener here only collects the steps, and :func:`record_steps` writes their
audit events once the run has finished (or failed), in short transactions of
their own. A schema below the audit log's own revision has no audit tables:
then the history table is the only record, and a warning says so.
"""

from __future__ import annotations

import structlog

from keel.audit import AuditEvent, EventCode, build_auditor
from keel.db.engine import Database
from keel.migrations.runtime.history import Action, Outcome, Step
from keel.settings import Settings

log = structlog.get_logger(__name__)

_DONE = {Outcome.APPLIED, Outcome.ROLLED_BACK, Outcome.RESTORED}


def audit_event(step: Step) -> AuditEvent | None:
    if step.action not in (Action.UPGRADE, Action.DOWNGRADE, Action.RESTORE):
        return None
    fields: dict[str, str | None] = {
        "from_revision": None,
        "to_revision": step.revision,
        "phase": step.action.value,
        "via": f"migrate:{step.actor}",
    }
    if step.outcome in _DONE:
        return AuditEvent(EventCode.MIGRATION_APPLIED, fields=fields)
    if step.outcome is Outcome.FAILED:
        return AuditEvent(EventCode.MIGRATION_FAILED, fields={**fields, "error": step.error})
    return None


async def record_steps(settings: Settings, steps: list[Step]) -> int:
    events = [event for event in map(audit_event, steps) if event is not None]
    if not events:
        return 0
    database = Database(settings.database_url)
    try:
        auditor = build_auditor(settings, database)
        for event in events:
            await auditor.record_now(event)
    except Exception as error:
        log.warning("migration_audit_skipped", reason=type(error).__name__, steps=len(events))
        return 0
    finally:
        await database.dispose()
    return len(events)

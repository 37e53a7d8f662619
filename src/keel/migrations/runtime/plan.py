"""``keel migrate plan``: what ``apply`` would run, as SQL, with its risks, before it runs.

Pure with respect to the database: it takes the current revision as an
argument (the CLI reads it) and renders each pending revision with Alembic's
offline mode in the PostgreSQL dialect, whatever the configured database, so
the operator reviews the SQL production will run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from keel.migrations import sql as sqltools
from keel.migrations.errors import LinterUnavailable
from keel.migrations.lint import Finding, lint_revision
from keel.migrations.script.graph import Kind, Scripts


@dataclass
class PlannedRevision:
    revision: str
    message: str
    kind: Kind
    sql: str
    locks: list[sqltools.LockNote]
    risks: list[Finding]
    excused: list[Finding]


@dataclass
class Plan:
    current: str | None
    head: str | None
    revisions: list[PlannedRevision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def risky(self) -> bool:
        return any(item.risks for item in self.revisions)

    @property
    def kinds(self) -> set[Kind]:
        """Expand, contract or both: the deploy pipeline allows only expand before a canary."""
        return {item.kind for item in self.revisions}

    def as_dict(self) -> dict[str, object]:
        return {
            "current": self.current,
            "head": self.head,
            "notes": self.notes,
            "revisions": [
                {
                    "revision": item.revision,
                    "message": item.message,
                    "kind": item.kind.value,
                    "sql": item.sql,
                    "locks": [vars(note) for note in item.locks],
                    "risks": [vars(f) for f in item.risks],
                    "excused": [vars(f) for f in item.excused],
                }
                for item in self.revisions
            ],
        }


def plan(
    current: str | None,
    *,
    timeouts: sqltools.Timeouts,
    target: str = "heads",
    script_location: Path | None = None,
) -> Plan:
    scripts = Scripts(script_location)
    result = Plan(current=current, head=scripts.head)
    use_squawk = True
    for item in scripts.pending(current, target):
        try:
            report = lint_revision(
                item, timeouts=timeouts, script_location=script_location, use_squawk=use_squawk
            )
        except LinterUnavailable as error:
            use_squawk = False
            result.notes.append(f"squawk not run: {error.detail}")
            report = lint_revision(
                item, timeouts=timeouts, script_location=script_location, use_squawk=False
            )
        upgrade_sql = sqltools.render(item, timeouts=timeouts, script_location=script_location)
        result.revisions.append(
            PlannedRevision(
                revision=item.revision,
                message=item.message,
                kind=report.kind,
                sql=upgrade_sql,
                locks=sqltools.locks(upgrade_sql),
                risks=report.findings,
                excused=report.excused,
            )
        )
    return result


def pending_kinds(
    current: str | None, *, target: str = "heads", script_location: Path | None = None
) -> list[tuple[str, Kind]]:
    """Each pending revision and its kind, oldest first, without squawk.

    For the deploy pipeline: only expand revisions may run before a canary. A
    revision's kind is the one it declares, or ``contract`` when it declares
    none or its SQL contradicts an ``expand`` declaration (lint fails those).
    """
    kinds = []
    for item in Scripts(script_location).pending(current, target):
        try:
            upgrade_sql = sqltools.render(item, script_location=script_location)
        except Exception:  # an upgrade that cannot be rendered cannot be called safe
            kinds.append((item.revision, Kind.CONTRACT))
            continue
        declared = item.declared_kind
        safe = declared is Kind.EXPAND and not sqltools.contract_reasons(upgrade_sql)
        kinds.append((item.revision, Kind.EXPAND if safe else Kind.CONTRACT))
    return kinds

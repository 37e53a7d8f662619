"""``keel migrate lint``: squawk on each revision's SQL, plus the checks squawk cannot make.

squawk (the ``squawk-cli`` package) reads PostgreSQL SQL and knows the locking
hazards: required fields, non-concurrent indexes, dropped or renamed columns,
type changes, constraints without ``NOT VALID``, missing timeouts, … It sees
one SQL file at a time, so Keel adds what needs the revision as a whole:

``keel-missing-downgrade``
    ``downgrade()`` does nothing (only ``pass``, a docstring, ``...`` or a
    ``raise``), or renders no SQL: the revision could not be rolled back.
``keel-edited-after-apply``
    the file's checksum differs from the one recorded when it was applied.
``keel-whole-table-update``
    an ``UPDATE``/``DELETE`` without ``WHERE``: one statement holding row locks
    on a whole table; backfill in batches instead.
``keel-kind``
    the revision does not declare ``# keel-kind: expand|contract``, or declares
    ``expand`` but contains statements the previous release cannot live with.
``keel-offline-sql``
    the upgrade does not render as SQL in Alembic's offline mode (it raises,
    or needs a live connection), so it can be neither reviewed nor linted.
``keel-lint-exception``
    a ``# keel-lint: allow RULE`` comment without ``-- REASON``.

A justified exception ``# keel-lint: allow RULE -- REASON`` becomes squawk's
own ``--exclude RULE`` for that revision (or silences the Keel rule).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keel.migrations import sql as sqltools
from keel.migrations.errors import LinterUnavailable
from keel.migrations.script.graph import Kind, Revision, Scripts

SQUAWK_PG_VERSION = "15"


@dataclass(frozen=True)
class Finding:
    revision: str
    rule: str
    message: str
    line: int | None = None
    source: str = "keel"  # "keel" or "squawk"


@dataclass
class RevisionReport:
    revision: Revision
    kind: Kind
    inferred_kind: Kind
    findings: list[Finding] = field(default_factory=list)
    excused: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass
class LintReport:
    revisions: list[RevisionReport]

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.revisions)

    @property
    def findings(self) -> list[Finding]:
        return [finding for item in self.revisions for finding in item.findings]

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "revisions": [
                {
                    "revision": item.revision.revision,
                    "kind": item.kind.value,
                    "inferred_kind": item.inferred_kind.value,
                    "findings": [vars(f) for f in item.findings],
                    "excused": [vars(f) for f in item.excused],
                }
                for item in self.revisions
            ],
        }


def squawk_binary() -> str:
    found = shutil.which("squawk")
    if found is None:
        # Installed into the same environment as Keel but not on PATH (a venv not activated).
        import sys  # noqa: PLC0415 - only needed on this fallback path

        candidate = Path(sys.executable).parent / "squawk"
        if candidate.exists():
            return str(candidate)
        raise LinterUnavailable(
            "`keel migrate lint` needs squawk: pip install squawk-cli (part of keel[dev])"
        )
    return found


def run_squawk(sql: str, *, exclude: Sequence[str] = ()) -> list[dict[str, object]]:
    """squawk's JSON findings for one SQL text."""
    with tempfile.TemporaryDirectory(prefix="keel-lint-") as workdir:
        path = Path(workdir) / "revision.sql"
        path.write_text(sql, encoding="utf-8")
        arguments = [squawk_binary(), f"--pg-version={SQUAWK_PG_VERSION}", "--reporter=json"]
        if exclude:
            arguments.append("--exclude=" + ",".join(sorted(set(exclude))))
        arguments.append(str(path))
        completed = subprocess.run(  # noqa: S603 - fixed binary, no shell
            arguments, capture_output=True, text=True, timeout=60, check=False
        )
    if completed.returncode not in (0, 1) or not completed.stdout.strip():
        if completed.returncode == 0:
            return []
        raise LinterUnavailable(f"squawk failed: {completed.stderr.strip()[:500]}")
    found: list[dict[str, object]] = json.loads(completed.stdout)
    return found


def downgrade_is_empty(path: Path) -> bool:
    """True when ``downgrade()`` is missing or does nothing but pass/raise/docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "downgrade":
            for statement in node.body:
                if isinstance(statement, ast.Pass | ast.Raise):
                    continue
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    continue  # a docstring or a bare ``...``
                return False
            return True
    return True


def _squawk_findings(revision: Revision, upgrade_sql: str) -> list[Finding]:
    allowed = [item.rule for item in revision.exceptions if item.reason]
    found = []
    for hit in run_squawk(upgrade_sql, exclude=allowed):
        line = hit.get("line")
        found.append(
            Finding(
                revision=revision.revision,
                rule=str(hit.get("rule_name")),
                message=str(hit.get("message")),
                line=int(line) + 1 if isinstance(line, int) else None,
                source="squawk",
            )
        )
    return found


def _downgrade_findings(revision: Revision, script_location: Path | None) -> list[Finding]:
    name = revision.revision
    try:
        downgrade_sql = sqltools.render(
            revision, direction="downgrade", script_location=script_location
        )
    except Exception as error:
        return [Finding(name, "keel-missing-downgrade", f"downgrade does not render: {error}")]
    if downgrade_is_empty(revision.path) or not sqltools.statements(downgrade_sql):
        return [Finding(name, "keel-missing-downgrade", "downgrade() does nothing")]
    return []


def _kind_findings(revision: Revision, upgrade_sql: str) -> list[Finding]:
    name = revision.revision
    if revision.kind_problem:
        return [Finding(name, "keel-kind", revision.kind_problem)]
    if revision.declared_kind is None:
        return [
            Finding(name, "keel-kind", "declare `# keel-kind: expand` or `# keel-kind: contract`")
        ]
    if revision.declared_kind is Kind.EXPAND:
        return [
            Finding(name, "keel-kind", f"declared expand but {reason}")
            for reason in sqltools.contract_reasons(upgrade_sql)
        ]
    return []


def lint_revision(
    revision: Revision,
    *,
    timeouts: sqltools.Timeouts,
    script_location: Path | None = None,
    applied_checksums: Mapping[str, str] | None = None,
    use_squawk: bool = True,
) -> RevisionReport:
    name = revision.revision
    try:
        upgrade_sql = sqltools.render(revision, timeouts=timeouts, script_location=script_location)
    except Exception as error:
        # Without its SQL nothing else can be checked; a revision that needs a live
        # connection (op.get_bind()) cannot be reviewed or planned either.
        report = RevisionReport(revision, revision.declared_kind or Kind.CONTRACT, Kind.CONTRACT)
        report.findings.append(
            Finding(name, "keel-offline-sql", f"upgrade does not render as SQL: {error!r}")
        )
        report.findings.extend(_downgrade_findings(revision, script_location))
        return report
    raw: list[Finding] = _squawk_findings(revision, upgrade_sql) if use_squawk else []
    raw.extend(_downgrade_findings(revision, script_location))

    recorded = (applied_checksums or {}).get(name)
    if recorded is not None and recorded != revision.checksum:
        raw.append(
            Finding(
                name,
                "keel-edited-after-apply",
                f"file checksum {revision.checksum[:12]} differs from the "
                f"{recorded[:12]} recorded when it was applied",
            )
        )
    raw.extend(
        Finding(
            name,
            "keel-whole-table-update",
            f"updates a whole table in one statement; backfill in batches: {statement[:120]}",
        )
        for statement in sqltools.whole_table_writes(upgrade_sql)
    )
    raw.extend(_kind_findings(revision, upgrade_sql))
    raw.extend(
        Finding(name, "keel-lint-exception", f"`keel-lint: allow {item.rule}` needs `-- reason`")
        for item in revision.exceptions
        if not item.reason
    )

    inferred = sqltools.inferred_kind(upgrade_sql)
    report = RevisionReport(
        revision=revision, kind=revision.declared_kind or inferred, inferred_kind=inferred
    )
    for finding in raw:
        excusable = finding.source == "keel" and finding.rule != "keel-lint-exception"
        if excusable and revision.allows(finding.rule):
            report.excused.append(finding)
        else:
            report.findings.append(finding)
    return report


def lint(
    *,
    timeouts: sqltools.Timeouts,
    script_location: Path | None = None,
    revisions: Sequence[str] | None = None,
    applied_checksums: Mapping[str, str] | None = None,
    use_squawk: bool = True,
) -> LintReport:
    """Lint every revision (or the named ones), oldest first."""
    scripts = Scripts(script_location)
    chosen = scripts.all()
    if revisions:
        wanted = set(revisions)
        chosen = [item for item in chosen if item.revision in wanted]
    return LintReport(
        revisions=[
            lint_revision(
                item,
                timeouts=timeouts,
                script_location=script_location,
                applied_checksums=applied_checksums,
                use_squawk=use_squawk,
            )
            for item in chosen
        ]
    )

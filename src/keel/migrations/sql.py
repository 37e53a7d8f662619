"""A revision's PostgreSQL SQL, rendered by Alembic's offline mode, and what it does.

Offline mode (``alembic upgrade A:B --sql``) turns the Python ops into the SQL
the PostgreSQL dialect would run, without a database. The runner executes
``SET LOCAL lock_timeout`` and ``SET LOCAL statement_timeout`` at the start of
every revision's transaction, so the rendered SQL carries those two lines too:
the linter sees exactly what will run.

The statement analysis here is deliberately shallow (a keyword reading of
each statement, not a parser): squawk does the real parsing; this only
classifies statements for the plan's lock summary and for telling expand from
contract revisions.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from alembic import command

from keel.migrations.script.graph import Kind, Revision, alembic_config

OFFLINE_URL = "postgresql://keel@localhost/keel"


@dataclass(frozen=True)
class Timeouts:
    lock_timeout_seconds: float
    statement_timeout_seconds: float

    def statements(self, *, local: bool = True) -> list[str]:
        """``SET LOCAL`` inside the revision's transaction; session-wide ``SET`` without one."""
        scope = "SET LOCAL" if local else "SET"
        return [
            f"{scope} lock_timeout = '{int(self.lock_timeout_seconds * 1000)}ms'",
            f"{scope} statement_timeout = '{int(self.statement_timeout_seconds * 1000)}ms'",
        ]


def render(
    revision: Revision,
    *,
    direction: str = "upgrade",
    timeouts: Timeouts | None = None,
    script_location: Path | None = None,
) -> str:
    """The SQL one revision runs in ``direction`` ("upgrade" or "downgrade")."""
    buffer = io.StringIO()
    config = alembic_config(OFFLINE_URL, script_location)
    config.output_buffer = buffer
    lower = revision.down_revision or "base"
    if direction == "upgrade":
        command.upgrade(config, f"{lower}:{revision.revision}", sql=True)
    else:
        command.downgrade(config, f"{revision.revision}:{lower}", sql=True)
    sql = buffer.getvalue()
    if timeouts is not None and revision.transactional:
        prefix = "".join(f"{line};\n" for line in timeouts.statements())
        sql = sql.replace("BEGIN;\n", "BEGIN;\n" + prefix, 1)
    elif timeouts is not None:
        sql = "".join(f"{line};\n" for line in timeouts.statements(local=False)) + sql
    return sql


_COMMENT = re.compile(r"--[^\n]*")
_CONTROL = re.compile(r"^(BEGIN|COMMIT|SET\s+LOCAL|SET\s)", re.IGNORECASE)
_VERSION_TABLE = re.compile(r"\balembic_version\b", re.IGNORECASE)


def statements(sql: str) -> list[str]:
    """The revision's own statements: no comments, transaction control or version bookkeeping."""
    found = []
    for raw in _COMMENT.sub("", sql).split(";"):
        statement = " ".join(raw.split())
        if not statement or _CONTROL.match(statement) or _VERSION_TABLE.search(statement):
            continue
        found.append(statement)
    return found


_NAME = r'"?([\w.]+)"?'
_LOCK_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(rf"^CREATE TABLE (?:IF NOT EXISTS )?{_NAME}", re.I),
        "new table (no lock on existing data)",
    ),
    (
        re.compile(rf"^CREATE (?:UNIQUE )?INDEX CONCURRENTLY .*? ON {_NAME}", re.I),
        "SHARE UPDATE EXCLUSIVE (reads and writes go on)",
    ),
    (
        re.compile(rf"^CREATE (?:UNIQUE )?INDEX .*? ON {_NAME}", re.I),
        "SHARE (blocks writes while the index builds)",
    ),
    (
        re.compile(rf"^DROP INDEX (?:CONCURRENTLY )?(?:IF EXISTS )?{_NAME}", re.I),
        "ACCESS EXCLUSIVE on the index's table",
    ),
    (
        re.compile(rf"^ALTER TABLE (?:ONLY )?(?:IF EXISTS )?{_NAME}.*VALIDATE CONSTRAINT", re.I),
        "SHARE UPDATE EXCLUSIVE (reads and writes go on)",
    ),
    (
        re.compile(rf"^ALTER TABLE (?:ONLY )?(?:IF EXISTS )?{_NAME}.*FOREIGN KEY", re.I),
        "SHARE ROW EXCLUSIVE on both tables (blocks writes)",
    ),
    (
        re.compile(rf"^ALTER TABLE (?:ONLY )?(?:IF EXISTS )?{_NAME}", re.I),
        "ACCESS EXCLUSIVE (blocks reads and writes)",
    ),
    (
        re.compile(rf"^DROP TABLE (?:IF EXISTS )?{_NAME}", re.I),
        "ACCESS EXCLUSIVE (blocks reads and writes)",
    ),
    (re.compile(rf"^UPDATE {_NAME}", re.I), "ROW EXCLUSIVE, row locks on every updated row"),
    (
        re.compile(rf"^DELETE FROM {_NAME}", re.I),  # noqa: S608 - a pattern, not a query
        "ROW EXCLUSIVE, row locks on every deleted row",
    ),
    (re.compile(rf"^INSERT INTO {_NAME}", re.I), "ROW EXCLUSIVE"),
)


@dataclass(frozen=True)
class LockNote:
    table: str
    lock: str
    statement: str


def locks(sql: str) -> list[LockNote]:
    """What each statement would lock on PostgreSQL, by its leading keywords."""
    notes = []
    created: set[str] = set()
    for statement in statements(sql):
        for pattern, mode in _LOCK_RULES:
            match = pattern.match(statement)
            if match:
                table = match.group(1)
                lock = mode
                if statement.upper().startswith("CREATE TABLE"):
                    created.add(table)
                elif table in created:
                    lock = "table created in this revision: nothing else can be waiting on it"
                notes.append(LockNote(table=table, lock=lock, statement=statement))
                break
    return notes


# Statements that old code cannot live with: they remove or reshape something
# the previous release may still read or write.
_CONTRACT = (
    (re.compile(r"^DROP TABLE\b", re.I), "drops a table"),
    (re.compile(r"^ALTER TABLE .*\bDROP COLUMN\b", re.I), "drops a column"),
    (re.compile(r"^ALTER TABLE .*\bDROP CONSTRAINT\b", re.I), "drops a constraint"),
    (re.compile(r"^ALTER TABLE .*\bRENAME\b", re.I), "renames a table or column"),
    (
        re.compile(r"^ALTER TABLE .*\bALTER COLUMN \S+ (SET DATA )?TYPE\b", re.I),
        "changes a column type",
    ),
    (
        re.compile(r"^ALTER TABLE .*\bALTER COLUMN \S+ SET NOT NULL\b", re.I),
        "makes a column required",
    ),
    (
        re.compile(r"^ALTER TABLE .*\bADD COLUMN\b(?!.*\bDEFAULT\b).*\bNOT NULL\b", re.I),
        "adds a required column without a default",
    ),
    (re.compile(r"^DROP INDEX\b", re.I), "drops an index"),
    (re.compile(r"^DELETE FROM\b", re.I), "deletes rows"),
)


def contract_reasons(sql: str) -> list[str]:
    """Why these statements would break the previous release (empty: the SQL is additive)."""
    reasons = []
    for statement in statements(sql):
        for pattern, reason in _CONTRACT:
            if pattern.search(statement):
                reasons.append(f"{reason}: {statement[:120]}")
                break
    return reasons


def inferred_kind(sql: str) -> Kind:
    return Kind.CONTRACT if contract_reasons(sql) else Kind.EXPAND


_WHOLE_TABLE = re.compile(r"^(UPDATE\s+\S+\s+SET|DELETE\s+FROM\s+\S+)(?!.*\bWHERE\b)", re.I)


def whole_table_writes(sql: str) -> list[str]:
    """Data-migration statements that touch every row of a table in one statement."""
    return [s for s in statements(sql) if _WHOLE_TABLE.match(s)]

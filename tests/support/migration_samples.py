"""Sample revisions in a temporary copy of Keel's migrations, and schema/data snapshots.

The samples never go into the real migrations directory: each test copies
``keel/migrations/script`` into its own temporary folder and writes the revisions
it needs on top of the real head.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text

from keel.db.engine import Database
from keel.migrations import RunnerOptions, head_revision
from keel.migrations.script.graph import SCRIPT_LOCATION

# Samples chain on top of the real head; their ids (s002, …) never clash with real revisions.
HEAD = head_revision() or "base"
# Every real revision, oldest first.
REAL_REVISIONS = [
    script.revision
    for script in reversed(list(ScriptDirectory(str(SCRIPT_LOCATION)).walk_revisions()))
]

HEADER = '''"""{doc}"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None

'''

# Additive: a nullable column. Safe before a deploy.
SAFE_EXPAND = """# keel-kind: expand


def upgrade() -> None:
    op.add_column("users", sa.Column("nickname", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("nickname")
"""

# Drops what the release before reads: runs only once that release serves no one.
CONTRACT = """# keel-kind: contract


def upgrade() -> None:
    op.drop_column("users", "display_name")


def downgrade() -> None:
    op.add_column("users", sa.Column("display_name", sa.String(200), nullable=True))
"""

# Everything squawk exists to catch, on a table that holds data.
DANGEROUS = """# keel-kind: expand


def upgrade() -> None:
    op.add_column("users", sa.Column("badge", sa.Text(), nullable=False))
    op.create_index("ix_users_display_name", "users", ["display_name"])
    op.drop_column("users", "role")
    op.alter_column("orgs", "name", type_=sa.Text())
    op.execute("UPDATE users SET display_name = lower(display_name)")


def downgrade() -> None:
    pass
"""

# Changes schema and data, then fails: the whole revision must vanish.
FAILING = """# keel-kind: expand


def upgrade() -> None:
    op.add_column("users", sa.Column("half_done", sa.Text(), nullable=True))
    op.execute("UPDATE users SET display_name = 'overwritten' WHERE id IS NOT NULL")
    op.execute("INSERT INTO no_such_table (id) VALUES (1)")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("half_done")
"""

# An index on a table with data, built without blocking writes.
CONCURRENT_INDEX = """# keel-kind: expand
# keel-transaction: none


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_users_display_name",
            "users",
            ["display_name"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_users_display_name",
            table_name="users",
            postgresql_concurrently=True,
            if_exists=True,
        )
"""

# Holds the lock mid-revision until the test releases it (for the concurrency test).
GATED = """# keel-kind: expand
import os
import time
from pathlib import Path


def upgrade() -> None:
    gate = Path(os.environ["KEEL_TEST_GATE"])
    with (gate / "entries").open("a") as entries:
        entries.write(f"{os.getpid()}\\n")
    for _ in range(600):  # bounded: at most 60 s
        if (gate / "release").exists():
            break
        time.sleep(0.1)
    op.add_column("users", sa.Column("gated", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("gated")
"""


def migrations_copy(workdir: Path) -> Path:
    """A private copy of Keel's real migrations directory, to put samples on top of."""
    target = workdir / "migrations"
    shutil.copytree(SCRIPT_LOCATION, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def add_revision(
    location: Path, revision: str, body: str, *, down: str | None = None, doc: str = ""
) -> Path:
    """Write a sample on top of ``down`` (default: the real head, whatever it is today)."""
    down = down or HEAD
    path = location / "versions" / f"{revision}_sample.py"
    header = HEADER.format(doc=doc or f"Sample revision {revision}.", revision=revision, down=down)
    path.write_text(header + body, encoding="utf-8")
    return path


def expand_then_contracts(location: Path) -> Path:
    """A release's cycle on the real head: ``s002`` (expand), then ``c003`` and ``c004``
    (contract)."""
    add_revision(location, "s002", SAFE_EXPAND)
    add_revision(location, "c003", CONTRACT, down="s002")
    add_revision(location, "c004", CONTRACT.replace("display_name", "role"), down="c003")
    return location


def options(location: Path, workdir: Path, **overrides: Any) -> RunnerOptions:
    values: dict[str, Any] = {
        "script_location": location,
        "backup_dir": workdir / "backups",
        "lock_wait_seconds": 60.0,
        "actor": "test",
    }
    values.update(overrides)
    return RunnerOptions(**values)


def _snapshot(connection: Connection, exclude: frozenset[str]) -> dict[str, Any]:
    inspector = inspect(connection)
    found: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table in exclude:
            continue
        columns = [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)]
        indexes = sorted(
            (i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(table)
        )
        rows = connection.execute(select(text("*")).select_from(text(f'"{table}"'))).all()
        found[table] = {
            "columns": columns,
            "indexes": indexes,
            "rows": sorted(tuple(str(value) for value in row) for row in rows),
        }
    return found


async def snapshot(url: str, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every table's columns, indexes and rows (as text), for before/after comparisons."""
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            return await connection.run_sync(_snapshot, exclude)
    finally:
        await database.dispose()

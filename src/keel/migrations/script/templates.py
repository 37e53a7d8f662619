"""``keel migrate new --expand/--contract``: a new revision file that says which kind it is.

A column change runs in two revisions around a deploy:

* **expand** (before the deploy): add the new column, nullable or with a
  default; add tables and indexes; add constraints ``NOT VALID``; backfill in
  batches. Old code never reads the new things and keeps working.
* deploy the code that writes both and reads the new one;
* **contract** (after every instance runs the new code): drop the old column,
  make the new one ``NOT NULL`` (after a validated ``CHECK``), rename.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from keel.migrations.script.graph import Kind, Scripts

_GUIDANCE = {
    Kind.EXPAND: """\
# Expand: additive only, safe while the previous release is still serving.
#   op.add_column("t", sa.Column("c", sa.Text(), nullable=True))
#   An index on an existing table goes in a revision of its own marked
#   `# keel-transaction: none` (CONCURRENTLY cannot run inside a transaction):
#   from keel.migrations.operations.concurrently import build_index, drop_index
#   build_index("ix_t_c", "t", ["c"])  # concurrently; drops an INVALID leftover first
#   op.create_foreign_key(..., postgresql_not_valid=True), then VALIDATE in a later revision
# Backfill in bounded batches (UPDATE ... WHERE id IN (SELECT ... LIMIT n)), never one UPDATE.""",
    Kind.CONTRACT: """\
# Contract: runs only after every instance runs code that no longer uses what goes away.
#   op.drop_column("t", "old_c")
#   op.alter_column("t", "c", nullable=False)  # after a validated CHECK (c IS NOT NULL)
# The downgrade must bring the old shape back (nullable, so old rows fit).""",
}

_TEMPLATE = '''"""{message}

Revision ID: {revision}
Revises: {down_revision}
Create Date: {created}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = {revision!r}
down_revision: str | None = {down_revision!r}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keel-kind: {kind}
{guidance}


def upgrade() -> None:
    raise NotImplementedError("write the {kind} step")


def downgrade() -> None:
    raise NotImplementedError("write the step that undoes upgrade()")
'''


def slug(message: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "revision"


def new_revision(
    message: str, kind: Kind, *, now: datetime, script_location: Path | None = None
) -> Path:
    """Write the next numbered revision of ``kind`` on top of head; return its path."""
    scripts = Scripts(script_location)
    revision = scripts.next_id()
    path = scripts.location / "versions" / f"{revision}_{slug(message)}.py"
    if path.exists():
        raise FileExistsError(path)
    text = _TEMPLATE.format(
        message=message.strip() or "Describe the change",
        revision=revision,
        down_revision=scripts.head,
        created=now.isoformat(timespec="seconds"),
        kind=kind.value,
        guidance=_GUIDANCE[kind],
    )
    path.write_text(text, encoding="utf-8")
    return path

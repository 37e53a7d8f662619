"""Building and dropping an index concurrently, from a ``keel-transaction: none`` revision.

``CREATE INDEX CONCURRENTLY`` that fails (a deadlock, a statement timeout, a
duplicate under a unique index, a cancelled deploy) does not roll back: it
leaves an INVALID index of that name, which PostgreSQL keeps up to date on
every write but never uses to read. Run again, ``IF NOT EXISTS`` would find it
and silently keep it. So :func:`build_index` drops such a leftover first
(:func:`drop_invalid_index`), inside the ``autocommit_block()`` it opens for the
build, and a retried build starts clean. Revisions call these two instead of
spelling out the block and the options each time, so every concurrent build
in Keel gets that rule.

Only on a live PostgreSQL connection: SQLite builds indexes in one transaction
(nothing is left half-built), and in offline mode (``keel migrate lint``, ``--sql``)
there is no catalog to read, so the rendered SQL is the build alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

_IS_INVALID = text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")


def drop_invalid_index(name: str, table: str) -> bool:
    """Drop ``name`` if it exists and is INVALID (concurrently); True if it did."""
    context = op.get_context()
    if context.as_sql or context.dialect.name != "postgresql":
        return False
    if not op.get_bind().execute(_IS_INVALID, {"name": name}).scalar():
        return False
    op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
    return True


def build_index(
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    unique: bool = False,
    where: str | None = None,
) -> None:
    """``CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS`` (partial ``WHERE where``),
    after dropping an INVALID leftover of ``name``; outside any transaction."""
    predicate = text(where) if where else None
    with op.get_context().autocommit_block():
        drop_invalid_index(name, table)
        op.create_index(
            name,
            table,
            list(columns),
            unique=unique,
            postgresql_where=predicate,
            sqlite_where=predicate,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def drop_index(name: str, table: str) -> None:
    """``DROP INDEX CONCURRENTLY IF EXISTS``; outside any transaction."""
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)

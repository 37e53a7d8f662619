"""What a revision that builds an index concurrently does before it builds.

``CREATE INDEX CONCURRENTLY`` that fails (a deadlock, a statement timeout, a
duplicate under a unique index, a cancelled deploy) does not roll back: it
leaves an INVALID index of that name, which PostgreSQL keeps up to date on
every write but never uses to read. Run again, ``IF NOT EXISTS`` would find it
and silently keep it. So a revision calls :func:`drop_invalid_index` first,
inside its ``autocommit_block()``, and the retried build starts clean.

Only on a live PostgreSQL connection: SQLite builds indexes in one transaction
(nothing is left half-built), and in offline mode (``keel migrate lint``, ``--sql``)
there is no catalog to read, so the rendered SQL is the build alone.
"""

from __future__ import annotations

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

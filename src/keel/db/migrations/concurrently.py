"""Alias of ``keel.migrations.operations.concurrently`` for revisions whose text is frozen."""

from keel.migrations.operations.concurrently import build_index, drop_index, drop_invalid_index

__all__ = ["build_index", "drop_index", "drop_invalid_index"]

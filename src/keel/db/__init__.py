"""Keel's own SQL database: tables, engine and transactions (migrations: ``keel.migrations``)."""

from keel.db.engine import Database
from keel.db.tables import Base

__all__ = ["Base", "Database"]

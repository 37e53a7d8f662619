"""Keel's own SQL database: tables, engine, transactions and migrations."""

from keel.db.engine import Database
from keel.db.tables import Base

__all__ = ["Base", "Database"]

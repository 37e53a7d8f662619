"""The job queue on SQLite and PostgreSQL: the one place that runs the queue's SQL.

The statements are named in :mod:`keel.jobs.queries`; here they are executed, as
:class:`~keel.jobs.connector.JobConnector` steps (:mod:`.base`, with the hot
paths per dialect in :mod:`.postgresql` and :mod:`.sqlite`), as the enqueue that
joins a caller's transaction (:mod:`.enqueue`) and as the operator's reads and
actions in a caller's session (:mod:`.session`).
"""

from __future__ import annotations

from keel.db.engine import Database
from keel.jobs.sql.base import SqlJobConnector
from keel.jobs.sql.enqueue import HeldInserter, SessionInserter, insert_in_session
from keel.jobs.sql.postgresql import PostgresJobConnector
from keel.jobs.sql.session import (
    cancel_in_session,
    get_in_session,
    list_in_session,
    purge_in_session,
    requeue_dead_in_session,
    stats_in_session,
)
from keel.jobs.sql.sqlite import SqliteJobConnector


def sql_connector(database: Database, *, pool_size: int = 0) -> SqlJobConnector:
    """The job store of ``database``'s dialect. ``pool_size`` > 0 gives a PostgreSQL
    store its own autocommit pool of that size (a worker's)."""
    if database.dialect == "postgresql":
        return PostgresJobConnector(database, pool_size=pool_size)
    return SqliteJobConnector(database)


__all__ = [
    "HeldInserter",
    "PostgresJobConnector",
    "SessionInserter",
    "SqlJobConnector",
    "SqliteJobConnector",
    "cancel_in_session",
    "get_in_session",
    "insert_in_session",
    "list_in_session",
    "purge_in_session",
    "requeue_dead_in_session",
    "sql_connector",
    "stats_in_session",
]

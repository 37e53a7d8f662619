"""Alembic environment: uses the connection handed over by keel.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from keel.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "")
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=dialect.startswith("sqlite"),
        compare_type=True,
        literal_binds=connection is None,
        transaction_per_migration=True,
    )


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = (config.get_main_option("sqlalchemy.url") or "").replace("+aiosqlite", "")
    url = url.replace("+asyncpg", "+psycopg")
    with create_engine(url).connect() as sync_connection:
        _configure(sync_connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

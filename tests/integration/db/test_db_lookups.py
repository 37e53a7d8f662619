"""Request-path reads: ``Database.query()`` and ``Database.rows()`` (issue 19).

On PostgreSQL they run without the BEGIN and COMMIT that ``read()`` sends (two
round trips of three for a one-statement read); each statement then stands
alone, which READ COMMITTED made it anyway. On both databases they return what
the tables hold.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import literal, select, text

from keel.db.engine import Database
from keel.db.tables import User

pytestmark = pytest.mark.postgres


async def test_rows_and_query_return_what_the_database_holds(database: Database) -> None:
    assert [tuple(row) for row in await database.rows(select(literal(7)))] == [(7,)]
    assert await database.rows(select(User.id).where(User.id == "no-such-user")) == []
    async with database.query() as session:
        assert await session.scalar(select(literal("seen"))) == "seen"


@pytest.mark.parametrize("backend", ["postgres"])
async def test_query_statements_are_not_wrapped_in_a_transaction(database: Database) -> None:
    """``now()`` is the transaction's start: equal twice inside ``read()``, apart in ``query()``."""

    async def two_nows(reader: str) -> tuple[datetime, datetime]:
        async with getattr(database, reader)() as session:
            first = await session.scalar(text("SELECT now()"))
            await session.execute(text("SELECT pg_sleep(0.02)"))
            second = await session.scalar(text("SELECT now()"))
        return first, second

    inside, later = await two_nows("read")
    assert inside == later  # the check can tell a transaction from none
    first, second = await two_nows("query")
    assert second > first

"""``Database.fetch`` of a ``PreparedRead``: the same rows as SQLAlchemy would return (issue 19).

The statement runs on the driver connection (asyncpg's, aiosqlite's), as the
SQL SQLAlchemy compiled for it, with SQLAlchemy's bind and result processors
applied by hand; these tests hold that path to SQLAlchemy's own (``rows``)
for the same statement and values, on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql

from keel.db.engine import Database
from keel.db.prepared import PreparedRead
from keel.db.tables import Org, Recognition, User
from keel.domain import orgs
from keel.ids import new_id

pytestmark = pytest.mark.postgres

EARLY = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)

BY_ORG_AND_TIME = PreparedRead(
    select(Recognition.id, Recognition.message, Recognition.category, Recognition.created_at)
    .where(
        Recognition.org_id == bindparam("org_id"),
        Recognition.created_at > bindparam("after"),
    )
    .order_by(Recognition.id)
    .limit(bindparam("limit"))
)


async def _three_recognitions(database: Database) -> str:
    async with database.write() as session:
        org = await orgs.create_org(session, "Prepared")
        giver = await orgs.create_user(session, org.id, "giver@example.com")
        recipient = await orgs.create_user(session, org.id, "recipient@example.com")
        for minutes, category in ((0, None), (10, "teamwork"), (20, None)):
            session.add(
                Recognition(
                    id=new_id(),
                    org_id=org.id,
                    giver_id=giver.id,
                    recipient_id=recipient.id,
                    message=f"thanks {minutes}",
                    category=category,
                    created_at=EARLY + timedelta(minutes=minutes),
                )
            )
    return org.id


async def test_fetch_returns_what_sqlalchemy_returns_for_the_same_statement(
    database: Database,
) -> None:
    org_id = await _three_recognitions(database)
    # The bound time in another offset: the bind processor normalises it to UTC.
    after = (EARLY + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=-5)))
    params = {"org_id": org_id, "after": after, "limit": 10}
    fetched = [tuple(row) for row in await database.fetch(BY_ORG_AND_TIME, params)]
    expected = [tuple(row) for row in await database.rows(BY_ORG_AND_TIME.statement, params)]
    assert fetched == expected
    assert [row[1] for row in fetched] == ["thanks 10", "thanks 20"]
    assert [row[2] for row in fetched] == ["teamwork", None]
    assert [row[3] for row in fetched] == [EARLY + timedelta(minutes=m) for m in (10, 20)]
    assert all(row[3].utcoffset() == timedelta(0) for row in fetched)


async def test_fetch_binds_every_parameter_and_finds_nothing_when_nothing_matches(
    database: Database,
) -> None:
    org_id = await _three_recognitions(database)
    one = await database.fetch(BY_ORG_AND_TIME, {"org_id": org_id, "after": EARLY, "limit": 1})
    assert [row[1] for row in one] == ["thanks 10"]
    other = {"org_id": "no-such-org", "after": EARLY, "limit": 10}
    assert list(await database.fetch(BY_ORG_AND_TIME, other)) == []


async def test_a_naive_datetime_is_refused_on_the_driver_path_too(database: Database) -> None:
    """The bind processors run: ``UTCDateTime`` refuses a time without an offset."""
    naive = {"org_id": "any", "after": datetime(2026, 1, 31, 9, 0), "limit": 1}
    with pytest.raises(ValueError, match="naive"):
        await database.fetch(BY_ORG_AND_TIME, naive)


def test_an_expanding_parameter_is_refused_when_compiled() -> None:
    read = PreparedRead(select(User.id).where(User.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="expanding"):
        read.for_driver(postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]


def test_a_statement_is_compiled_once_per_dialect() -> None:
    read = PreparedRead(select(Org.id).where(Org.id == bindparam("id")))
    dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
    first = read.for_driver(dialect)
    assert read.for_driver(dialect) is first
    assert first.names == ("id",)
    assert first.arguments({"id": "x"}) == ["x"]

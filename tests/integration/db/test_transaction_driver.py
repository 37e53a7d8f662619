"""A write transaction's hot statements on its driver connection (issue 19).

On PostgreSQL with asyncpg the recognition's INSERT and the audit append run on
the asyncpg connection under the ``Database.write()`` session
(``transaction_driver``), whose BEGIN is sent when the transaction starts. These
tests hold that path to the session's: the same row, the same refusal, and the
same all-or-nothing commit of the record, its audit event and the key's stored
answer; on SQLite the session runs them, as before.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NoReturn

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from tests.support.app import World

from keel.audit import AuditEvent, EventCode
from keel.audit.recorder import Auditor
from keel.db.engine import Database, transaction_driver
from keel.db.tables import Recognition
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.domain import orgs, recognitions
from keel.domain.principal import Plan, Principal, Role
from keel.errors import InvalidInput
from keel.testing import ManualClock

pytestmark = pytest.mark.postgres

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _two_orgs(database: Database) -> tuple[Principal, str, str]:
    """A giver, a colleague of the giver's organisation, a user of another one."""
    async with database.write() as session:
        org = await orgs.create_org(session, "Driver")
        other = await orgs.create_org(session, "Elsewhere")
        giver = await orgs.create_user(session, org.id, "giver@driver.test")
        colleague = await orgs.create_user(session, org.id, "colleague@driver.test")
        stranger = await orgs.create_user(session, other.id, "stranger@elsewhere.test")
    principal = Principal(giver.id, org.id, Role.MEMBER, "token", Plan.FREE)
    return principal, colleague.id, stranger.id


async def test_a_write_transaction_has_begun_on_the_driver_before_its_first_statement(
    database: Database,
) -> None:
    async with database.write() as session, transaction_driver(session) as driver:
        if database.asyncpg:
            assert driver is not None
            assert driver.is_in_transaction()
        else:
            assert driver is None  # SQLite: the session runs every statement
    async with database.query() as session, transaction_driver(session) as driver:
        assert driver is None  # autocommit reads: no transaction to join


async def test_the_insert_stores_the_recognition_as_given(database: Database) -> None:
    principal, colleague, _ = await _two_orgs(database)
    # A time in another offset: the bind processor stores the same instant in UTC.
    clock = ManualClock(WHEN.astimezone(timezone(timedelta(hours=2))))
    new = recognitions.NewRecognition(colleague, "  thanks for the review  ", "teamwork")
    async with database.write() as session:
        record = await recognitions.create(session, principal, new, clock=clock)
    async with database.read() as session:
        row = await session.get(Recognition, record.id)
    assert row is not None
    assert (row.org_id, row.giver_id, row.recipient_id) == (
        principal.org_id,
        principal.user_id,
        colleague,
    )
    assert (row.message, row.category) == ("thanks for the review", "teamwork")
    assert row.created_at == WHEN
    assert row.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("whose", ["stranger", "nobody"])
async def test_the_insert_refuses_a_recipient_outside_the_organisation(
    database: Database, whose: str
) -> None:
    principal, _, stranger = await _two_orgs(database)
    recipient = stranger if whose == "stranger" else "0" * 26
    new = recognitions.NewRecognition(recipient, "not yours to thank")
    with pytest.raises(InvalidInput, match="recipient not found"):
        async with database.write() as session:
            await recognitions.create(session, principal, new)
    stored = await database.rows(select(func.count()).select_from(Recognition))
    assert stored[0][0] == 0


async def test_a_failure_after_the_driver_statements_rolls_them_back(
    database: Database, app: FastAPI
) -> None:
    principal, colleague, _ = await _two_orgs(database)
    auditor: Auditor = app.state.services.audit
    new = recognitions.NewRecognition(colleague, "rolled back")

    async def create_audit_then_fail() -> None:
        async with database.write() as session:
            record = await recognitions.create(session, principal, new)
            await auditor.record(session, _created(principal, record))
            raise RuntimeError("after the append")

    with pytest.raises(RuntimeError, match="after the append"):
        await create_audit_then_fail()
    assert await _count(database, Recognition) == 0
    assert await _audited(database) == 0


def _created(principal: Principal, record: recognitions.RecognitionRecord) -> AuditEvent:
    return AuditEvent(
        EventCode.RECOGNITION_CREATED,
        org_id=principal.org_id,
        actor_id=principal.user_id,
        subject_id=record.recipient_id,
        fields={"recognition_id": record.id, "evidence_count": 0},
    )


async def _count(database: Database, table: Any) -> int:
    return int((await database.rows(select(func.count()).select_from(table)))[0][0])


async def _audited(database: Database) -> int:
    created = EventCode.RECOGNITION_CREATED.value
    query = select(func.count()).select_from(AuditRow).where(AuditRow.code == created)
    return int((await database.rows(query))[0][0])


async def test_a_keyed_post_failing_at_its_audit_append_leaves_nothing_behind(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record, its audit event and the key's completion commit together or not at
    all: the append ran, then the connection broke before the commit. The request is
    a 503; the retry with the same key runs again (nothing was stored to replay) and
    leaves exactly one recognition and one audit event."""
    database: Database = app.state.services.database
    auditor: Auditor = app.state.services.audit
    appended = 0
    record = auditor.record

    async def append_then_break(session: Any, event: Any) -> NoReturn:
        nonlocal appended
        await record(session, event)
        appended += 1
        raise ConnectionResetError("the connection broke before the commit")

    monkeypatch.setattr(auditor, "record", append_then_break)
    headers = {**world.alice.headers, "Idempotency-Key": "driver-rollback"}
    body = {"recipient_id": world.bob.id, "message": "all or nothing"}
    first = await client.post("/v1/recognitions", json=body, headers=headers)
    assert first.status_code == 503
    assert "retry-after" in first.headers
    assert appended == 1
    assert await _count(database, Recognition) == 0
    assert await _audited(database) == 0

    monkeypatch.setattr(auditor, "record", record)
    retried = await client.post("/v1/recognitions", json=body, headers=headers)
    assert retried.status_code == 201
    assert await _count(database, Recognition) == 1
    assert await _audited(database) == 1
    async with database.read() as session:
        assert await session.get(Recognition, retried.json()["id"]) is not None


async def test_a_cancelled_driver_statement_discards_its_connection(database: Database) -> None:
    if not database.asyncpg:
        pytest.skip("the driver path is asyncpg's")
    started = asyncio.Event()
    drivers: list[Any] = []

    async def stuck() -> None:
        async with database.write() as session, transaction_driver(session) as driver:
            drivers.append(driver)
            started.set()
            await driver.fetchval("SELECT pg_sleep(30)")

    task = asyncio.create_task(stuck())
    await started.wait()
    await asyncio.sleep(0)  # let the statement reach the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert drivers[0].is_closed()  # invalidated: never handed out again
    assert await _count(database, Recognition) == 0  # the pool gives a working connection

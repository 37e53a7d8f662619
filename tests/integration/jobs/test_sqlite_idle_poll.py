"""A SQLite worker's poll of an idle queue is a read: no write lock, no writer turn.

``keel serve`` on SQLite runs the worker in its own process, polling each queue
five times a second; as write transactions those polls stood in line with the
requests' writes. The claim itself is unchanged (the contract suite holds it to
the same answers as the other stores); this checks what a poll sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from keel.db.engine import Database
from keel.jobs import enqueue
from keel.jobs.connector import JobConnector
from keel.jobs.sql import sql_connector
from keel.testing import ManualClock

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def store(database: Database) -> AsyncIterator[JobConnector]:
    connector = sql_connector(database, pool_size=2)
    yield connector
    await connector.close()


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    sent: list[str] = []

    def note(*args: Any) -> None:
        sent.append(str(args[2]).split()[0].upper())  # (conn, cursor, statement, …)

    event.listen(database.engine.sync_engine, "before_cursor_execute", note)
    yield sent
    event.remove(database.engine.sync_engine, "before_cursor_execute", note)


async def test_an_idle_poll_sends_one_select(store: JobConnector, statements: list[str]) -> None:
    assert await store.claim("default", 4, "w1", NOW, NOW + LEASE) == []
    assert statements == ["SELECT"]


async def test_a_due_job_is_still_claimed_under_the_write_lock(
    store: JobConnector, statements: list[str]
) -> None:
    job_id = await enqueue(store, "test.record", clock=ManualClock(NOW))
    statements.clear()
    [claimed] = await store.claim("default", 4, "w1", NOW, NOW + LEASE)
    assert claimed.id == job_id
    assert statements == ["SELECT", "BEGIN", "UPDATE"]


async def test_successes_to_record_go_straight_to_the_write(
    store: JobConnector, statements: list[str]
) -> None:
    job_id = await enqueue(store, "test.record", clock=ManualClock(NOW))
    await store.claim("default", 4, "w1", NOW, NOW + LEASE)
    statements.clear()
    later = NOW + timedelta(seconds=1)
    assert await store.claim("default", 4, "w1", later, later + LEASE, [(job_id, 1)]) == []
    assert statements == ["BEGIN", "UPDATE", "UPDATE"]
    assert (await store.get(job_id)).state == "succeeded"

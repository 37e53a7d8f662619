"""The memory job store on its own, with no database at all (what ``keel.testing`` ships).

The contract suite (``tests/integration/jobs/test_queue_contract.py``) holds it to
the SQL stores' answers; these cover what only it has: running without a database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from keel.jobs import enqueue
from keel.jobs.connector import Lease
from keel.jobs.states import JobState
from keel.testing import ManualClock, MemoryJobConnector

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def test_without_a_database_a_dying_job_is_dead_and_its_hook_is_skipped() -> None:
    store = MemoryJobConnector()
    job_id = await enqueue(store, "test.record", max_attempts=1, clock=ManualClock(T0))
    [claimed] = await store.claim("default", 1, "w", T0, T0 + timedelta(seconds=30))
    ran: list[AsyncSession] = []

    async def on_dead(session: AsyncSession) -> None:
        ran.append(session)

    assert await store.fail(
        Lease(job_id, "w", claimed.attempt),
        state=JobState.DEAD,
        run_at=None,
        error="boom",
        now=T0,
        on_dead=on_dead,
    )
    assert ran == []
    assert (await store.get(job_id)).state == JobState.DEAD.value


async def test_a_claimed_payload_is_a_copy_the_handler_may_change() -> None:
    store = MemoryJobConnector()
    job_id = await enqueue(store, "test.record", {"n": 1}, clock=ManualClock(T0))
    [claimed] = await store.claim("default", 1, "w", T0, T0 + timedelta(seconds=30))
    claimed.payload["n"] = 2
    assert (await store.get(job_id)).payload == {"n": 1}

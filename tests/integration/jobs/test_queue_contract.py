"""The job store contract: every queue behaviour, on memory, SQLite and PostgreSQL.

Each test drives one :class:`~keel.jobs.connector.JobConnector` through a step of a
job's life with made-up times (nothing sleeps), so the three stores are held to the
same answers: claim order and limits, leases and their fence, heartbeats, reclaim of
expired leases, retry with backoff, dead-lettering and its hook, unique keys, and
cron slots taken once. The worker-level tests at the end run the real
:class:`~keel.jobs.worker.Worker` over each store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from tests.support.databases import BACKENDS, Templates, fresh_database
from tests.support.jobs import Recorder, make_registry, worker_for

from keel.db.engine import Database
from keel.errors import NotFound
from keel.jobs import Enqueuer, NewJob, enqueue, queue, schedule
from keel.jobs.connector import LEASE_EXPIRED, JobConnector, Lease, ReclaimedJob
from keel.jobs.memory import MemoryJobConnector
from keel.jobs.registry import Periodic
from keel.jobs.sql import sql_connector
from keel.jobs.states import IllegalTransition, JobState
from keel.testing import ManualClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
STORES = ("memory", *BACKENDS)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(templates: Templates, store_kind: str, tmp_path: Path) -> Iterator[str]:
    # The memory store gets a SQLite database too: its on_dead hooks' transaction and
    # the worker's other resources (the auditor) live there, never its jobs.
    backend = "sqlite" if store_kind == "memory" else store_kind
    with fresh_database(templates, backend, tmp_path) as url:
        yield url


@pytest.fixture
async def database(store_url: str) -> AsyncIterator[Database]:
    db = Database(store_url)
    yield db
    await db.dispose()


@pytest.fixture
async def store(store_kind: str, database: Database) -> AsyncIterator[JobConnector]:
    connector: JobConnector
    if store_kind == "memory":
        connector = MemoryJobConnector(database)
    else:
        connector = sql_connector(database, pool_size=2)
    yield connector
    await connector.close()


async def put(store: JobConnector, job_type: str = "test.record", **options: object) -> str:
    return await enqueue(store, job_type, clock=ManualClock(T0), **options)  # type: ignore[arg-type]


async def state_of(store: JobConnector, job_id: str) -> JobState:
    return JobState((await store.get(job_id)).state)


# --- enqueue and claim ---------------------------------------------------------------


async def test_a_due_job_is_claimed_once_with_its_payload_and_first_attempt(
    store: JobConnector,
) -> None:
    job_id = await put(store, payload={"n": 1})
    [claimed] = await store.claim("default", 5, "w1", at(1), at(1) + LEASE)
    assert (claimed.id, claimed.attempt, claimed.payload) == (job_id, 1, {"n": 1})
    assert await store.claim("default", 5, "w2", at(2), at(2) + LEASE) == []
    record = await store.get(job_id)
    assert (record.state, record.lease_owner, record.lease_expires_at) == (
        JobState.RUNNING.value,
        "w1",
        at(1) + LEASE,
    )


async def test_claims_take_priority_then_run_at_up_to_the_limit_per_queue(
    store: JobConnector,
) -> None:
    low = await put(store, priority=0)
    high = await put(store, priority=5)
    later = await put(store, priority=5, run_at=at(1))
    other_queue = await put(store, queue="critical")
    claimed = await store.claim("default", 2, "w", at(2), at(2) + LEASE)
    assert [job.id for job in claimed] == [high, later]
    assert [job.id for job in await store.claim("default", 5, "w", at(2), at(2) + LEASE)] == [low]
    assert [job.id for job in await store.claim("critical", 5, "w", at(2), at(2) + LEASE)] == [
        other_queue
    ]


async def test_a_scheduled_job_is_not_claimed_before_its_time(store: JobConnector) -> None:
    job_id = await put(store, run_at=at(60))
    assert await state_of(store, job_id) is JobState.SCHEDULED
    assert await store.claim("default", 5, "w", at(59), at(59) + LEASE) == []
    assert [job.id for job in await store.claim("default", 5, "w", at(60), at(90))] == [job_id]


async def test_an_enqueuer_adds_a_batch_in_order(store: JobConnector) -> None:
    async with Enqueuer(store, clock=ManualClock(T0)) as enqueuer:
        ids = await enqueuer.enqueue_many([NewJob("test.record", {"i": i}) for i in range(3)])
        one = await enqueuer.enqueue("test.record")
    assert len({*ids, one}) == 4
    claimed = await store.claim("default", 10, "w", at(1), at(1) + LEASE)
    assert {job.id for job in claimed} == {*ids, one}


# --- unique keys ---------------------------------------------------------------------


async def test_a_unique_key_enqueues_a_logical_job_once(store: JobConnector) -> None:
    first = await put(store, unique_key="k1")
    assert await put(store, unique_key="k1") == first
    async with Enqueuer(store, clock=ManualClock(T0)) as enqueuer:
        batch = await enqueuer.enqueue_many(
            [NewJob("test.record", unique_key="k1"), NewJob("test.record", unique_key="k2")]
        )
    assert batch[0] == first
    assert batch[1] != first
    assert len(await store.list_jobs()) == 2


async def test_a_purged_job_frees_its_unique_key(store: JobConnector) -> None:
    first = await put(store, unique_key="k1", max_attempts=1)
    [claimed] = await store.claim("default", 1, "w", at(1), at(31))
    assert await store.fail(
        Lease(first, "w", claimed.attempt), state=JobState.DEAD, run_at=None, error="x", now=at(2)
    )
    assert await store.purge([JobState.DEAD], job_ids=[first]) == 1
    with pytest.raises(NotFound):
        await store.get(first)
    assert await put(store, unique_key="k1") != first


# --- leases: the fence, heartbeats, reclaim ---------------------------------------------


async def test_only_the_lease_holder_of_this_attempt_records_an_outcome(
    store: JobConnector,
) -> None:
    job_id = await put(store)
    [claimed] = await store.claim("default", 1, "w1", at(1), at(31))
    assert await store.succeed([(job_id, claimed.attempt)], "w2", at(2)) == 0
    assert await store.succeed([(job_id, claimed.attempt + 1)], "w1", at(2)) == 0
    assert not await store.fail(
        Lease(job_id, "w2", claimed.attempt), state=JobState.DEAD, run_at=None, error="x", now=at(2)
    )
    assert await store.succeed([(job_id, claimed.attempt)], "w1", at(3)) == 1
    record = await store.get(job_id)
    assert (record.state, record.finished_at, record.lease_owner) == (
        JobState.SUCCEEDED.value,
        at(3),
        None,
    )


async def test_a_claim_records_the_successes_it_carries(store: JobConnector) -> None:
    first = await put(store)
    [claimed] = await store.claim("default", 1, "w", at(1), at(31))
    second = await put(store)
    again = await store.claim("default", 1, "w", at(2), at(32), [(first, claimed.attempt)])
    assert [job.id for job in again] == [second]
    assert await state_of(store, first) is JobState.SUCCEEDED


async def test_a_heartbeat_renews_only_the_leases_the_worker_still_holds(
    store: JobConnector,
) -> None:
    mine, theirs = await put(store), await put(store)
    await store.claim("default", 1, "w1", at(1), at(31))
    await store.claim("default", 1, "w2", at(1), at(31))
    assert await store.renew([mine, theirs], "w1", at(60)) == {mine}
    assert (await store.get(mine)).lease_expires_at == at(60)
    assert await store.reclaim(at(45)) != []  # theirs expired at 31; mine holds until 60
    assert await state_of(store, mine) is JobState.RUNNING
    assert await store.renew([theirs], "w2", at(90)) == set()


async def test_an_expired_lease_is_reclaimed_to_ready_and_the_attempt_counts(
    store: JobConnector,
) -> None:
    job_id = await put(store, max_attempts=3)
    await store.claim("default", 1, "dead-worker", at(1), at(31))
    assert await store.reclaim(at(30)) == []  # not expired yet
    [reclaimed] = await store.reclaim(at(32))
    assert (reclaimed.id, reclaimed.state, reclaimed.attempt) == (job_id, "ready", 1)
    record = await store.get(job_id)
    assert (record.last_error, record.lease_owner, record.run_at) == (LEASE_EXPIRED, None, at(32))
    [retried] = await store.claim("default", 1, "w2", at(33), at(63))
    assert retried.attempt == 2
    assert not await store.succeed([(job_id, 1)], "dead-worker", at(34))


async def test_an_expired_lease_on_the_last_attempt_is_dead_with_its_hook_committed(
    store: JobConnector,
) -> None:
    job_id = await put(store, max_attempts=1)
    await store.claim("default", 1, "w", at(1), at(31))
    seen: list[list[str]] = []

    async def on_dead(session: AsyncSession, jobs: Sequence[ReclaimedJob]) -> None:
        assert session.in_transaction()
        seen.append([job.id for job in jobs])

    [reclaimed] = await store.reclaim(at(40), on_dead)
    assert reclaimed.state == JobState.DEAD.value
    assert seen == [[job_id]]
    assert (await store.get(job_id)).finished_at == at(40)


async def test_a_released_job_is_ready_again_with_its_attempt_handed_back(
    store: JobConnector,
) -> None:
    job_id = await put(store)
    await store.claim("default", 1, "w", at(1), at(31))
    await store.release([job_id], "someone-else")
    assert await state_of(store, job_id) is JobState.RUNNING
    await store.release([job_id], "w")
    record = await store.get(job_id)
    assert (record.state, record.attempt, record.lease_owner) == ("ready", 0, None)


# --- retry, deferral, dead-letter ------------------------------------------------------


async def test_a_failed_attempt_retries_at_its_backoff_time_then_dies(
    store: JobConnector,
) -> None:
    job_id = await put(store, max_attempts=2)
    [first] = await store.claim("default", 1, "w", at(1), at(31))
    assert await store.fail(
        Lease(job_id, "w", 1), state=JobState.RETRYING, run_at=at(20), error="E: one", now=at(2)
    )
    record = await store.get(job_id)
    assert (record.state, record.run_at, record.last_error) == ("retrying", at(20), "E: one")
    assert await store.claim("default", 1, "w", at(19), at(49)) == []
    [second] = await store.claim("default", 1, "w", at(20), at(50))
    assert (first.attempt, second.attempt) == (1, 2)
    hooked: list[bool] = []

    async def on_dead(session: AsyncSession) -> None:
        hooked.append(session.in_transaction())

    assert await store.fail(
        Lease(job_id, "w", 2),
        state=JobState.DEAD,
        run_at=None,
        error="E: two",
        now=at(21),
        on_dead=on_dead,
    )
    assert hooked == [True]
    record = await store.get(job_id)
    assert (record.state, record.finished_at, record.last_error) == ("dead", at(21), "E: two")


async def test_a_deferred_attempt_is_not_spent(store: JobConnector) -> None:
    job_id = await put(store)
    await store.claim("default", 1, "w", at(1), at(31))
    assert await store.defer(Lease(job_id, "w", 1), run_at=at(10), reason="breaker open")
    record = await store.get(job_id)
    assert (record.state, record.attempt, record.run_at) == ("retrying", 0, at(10))
    [again] = await store.claim("default", 1, "w", at(10), at(40))
    assert again.attempt == 1


async def test_dead_jobs_are_requeued_with_fresh_attempts_or_purged(store: JobConnector) -> None:
    dead, alive = await put(store, max_attempts=1), await put(store, queue="critical")
    [claimed] = await store.claim("default", 1, "w", at(1), at(31))
    assert claimed.id == dead
    await store.fail(Lease(dead, "w", 1), state=JobState.DEAD, run_at=None, error="x", now=at(2))
    with pytest.raises(IllegalTransition):
        await store.requeue_dead([alive], at(3))
    assert await store.requeue_dead(None, at(3)) == [dead]
    record = await store.get(dead)
    assert (record.state, record.attempt, record.run_at) == ("ready", 0, at(3))
    await store.claim("default", 1, "w", at(4), at(34))
    assert await store.fail(
        Lease(dead, "w", 1), state=JobState.DEAD, run_at=None, error="x", now=at(5)
    )
    assert await store.purge([JobState.DEAD], finished_before=at(5)) == 0
    assert await store.purge([JobState.DEAD], finished_before=at(6)) == 1


async def test_a_queued_job_can_be_cancelled_but_not_a_running_one(store: JobConnector) -> None:
    queued, running = await put(store, priority=0), await put(store, priority=1)
    await store.claim("default", 1, "w", at(1), at(31))
    await queue.cancel(store, queued, clock=ManualClock(at(2)))
    assert await state_of(store, queued) is JobState.CANCELLED
    with pytest.raises(IllegalTransition):
        await store.cancel(running, at(2))


# --- cron slots --------------------------------------------------------------------------


async def test_a_cron_slot_enqueues_its_job_once_however_many_workers_tick(
    store: JobConnector,
) -> None:
    recorder = Recorder()
    every_minute = Periodic("contract-minutely", "* * * * *", "test.record", {"k": "v"})
    registry = make_registry(recorder, [every_minute])
    now = at(30)  # slot 12:00:00
    first = await schedule.tick(store, registry, [every_minute], now)
    assert await schedule.tick(store, registry, [every_minute], at(45)) == []
    assert len(first) == 1
    record = await store.get(first[0])
    assert record.payload == {"k": "v", "slot": T0.isoformat()}
    assert record.unique_key == schedule.slot_key(every_minute, T0)
    later = await schedule.tick(store, registry, [every_minute], at(61))
    assert len(later) == 1
    assert later != first


# --- reading -----------------------------------------------------------------------------


async def test_stats_count_by_queue_and_state_and_age_the_oldest_due_job(
    store: JobConnector,
) -> None:
    await put(store)
    await put(store)
    await put(store, queue="critical", run_at=at(100))
    await store.claim("default", 1, "w", at(1), at(31))
    stats = {item.queue: item for item in await store.stats(at(10))}
    assert stats["default"].depth == {JobState.READY: 1, JobState.RUNNING: 1}
    assert stats["default"].oldest_ready_age_seconds == 10.0
    assert stats["critical"].depth == {JobState.SCHEDULED: 1}
    assert stats["critical"].oldest_ready_age_seconds == 0.0


async def test_list_is_newest_first_and_filters(store: JobConnector) -> None:
    first = await put(store)
    second = await put(store, queue="critical")
    assert [job.id for job in await store.list_jobs()] == [second, first]
    assert [job.id for job in await store.list_jobs(queue="critical")] == [second]
    assert [job.id for job in await store.list_jobs(state=JobState.DEAD)] == []
    await store.check()


# --- the worker over each store ---------------------------------------------------------


async def test_the_worker_retries_with_backoff_then_succeeds_on_every_store(
    store: JobConnector, database: Database, tmp_path: Path
) -> None:
    recorder = Recorder()
    clock = ManualClock(T0)
    job_id = await enqueue(store, recorder.record, {"n": 1}, clock=clock)
    recorder.fail_times[job_id] = 1
    async with worker_for(
        database, make_registry(recorder), clock, tmp_path, connector=store
    ) as worker:
        assert await worker.run_until_idle("default") == 1
        record = await store.get(job_id)
        assert record.state == JobState.RETRYING.value
        assert T0 <= record.run_at <= T0 + timedelta(seconds=10)  # the policy's first ceiling
        clock.advance(10)
        assert await worker.run_until_idle("default") == 1
    assert await state_of(store, job_id) is JobState.SUCCEEDED
    assert [(attempt, payload) for _id, attempt, payload in recorder.calls] == [
        (1, {"n": 1}),
        (2, {"n": 1}),
    ]

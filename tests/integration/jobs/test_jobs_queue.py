"""The job queue on SQLite and PostgreSQL, with time driven by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from tests.support.jobs import Recorder, make_registry, worker_for

from keel.db.engine import Database
from keel.db.tables_audit import AuditEvent as AuditEventRow
from keel.db.tables_jobs import Job
from keel.errors import InvalidInput, NotFound
from keel.jobs import enqueue, queries, queue
from keel.jobs.health import check_job_store
from keel.jobs.listener import CHANNEL, asyncpg_dsn
from keel.jobs.metrics import JobMetrics
from keel.jobs.registry import JobContext, JobType, Periodic
from keel.jobs.states import IllegalTransition, JobState
from keel.jobs.worker import Worker
from keel.testing import ManualClock


async def job(database: Database, job_id: str) -> Job:
    async with database.read() as session:
        return await queue.get(session, job_id)


async def count_jobs(database: Database, job_type: str | None = None) -> int:
    async with database.read() as session:
        query = select(func.count()).select_from(Job)
        if job_type:
            query = query.where(Job.job_type == job_type)
        return int(await session.scalar(query) or 0)


async def test_enqueue_rolls_back_with_its_transaction(database: Database) -> None:
    class Boom(Exception):
        pass

    async def enqueue_then_fail() -> None:
        async with database.write() as session:
            await queue.enqueue(session, "test.record", {"n": 1})
            raise Boom

    with pytest.raises(Boom):
        await enqueue_then_fail()
    assert await count_jobs(database) == 0
    async with database.write() as session:
        job_id = await queue.enqueue(session, "test.record", {"n": 2})
    assert (await job(database, job_id)).state == JobState.READY


async def test_unique_key_enqueues_a_logical_job_once(database: Database) -> None:
    async with database.write() as session:
        first = await queue.enqueue(session, "test.record", unique_key="k1")
        again = await queue.enqueue(session, "test.record", unique_key="k1")
    async with database.write() as session:
        later = await queue.enqueue(session, "test.record", unique_key="k1")
        batch = await queue.Enqueuer(session).enqueue_many(
            [
                queue.NewJob("test.record", unique_key="k2"),
                queue.NewJob("test.record", unique_key="k1"),
                queue.NewJob("test.record", unique_key="k2"),
                queue.NewJob("test.record"),
            ],
        )
    assert first == again == later == batch[1]
    assert batch[0] == batch[2] != batch[3]
    assert await count_jobs(database) == 3


async def test_batch_of_a_thousand_commits_together(database: Database) -> None:
    async with database.write() as session:
        ids = await queue.Enqueuer(session).enqueue_many(
            [queue.NewJob("test.record", {"i": i}) for i in range(1500)],
        )
    assert len(set(ids)) == 1500
    assert await count_jobs(database) == 1500


async def test_a_batch_repeating_one_job_or_payload_gets_one_row_each(database: Database) -> None:
    """``Enqueuer.enqueue_many`` validates a repeated ``NewJob`` and encodes a shared payload
    once; every position must still be its own row with its own columns."""
    clock = ManualClock()
    later = clock.now() + timedelta(minutes=5)
    shared = {"n": 1}
    typed = JobType("test.typed", lambda _context: asyncio.sleep(0), queue="q2")
    repeated = queue.NewJob("test.record", shared, priority=3)
    jobs = [
        repeated,
        queue.NewJob(typed, shared, run_at=later, max_attempts=2),
        repeated,
        queue.NewJob("test.record", {"n": 2}),
        repeated,
    ]
    async with database.write() as session:
        ids = await queue.Enqueuer(session, clock=clock).enqueue_many(jobs)
    shared["n"] = 99  # the caller's mapping changing afterwards changes no job
    assert len(set(ids)) == 5
    assert ids == sorted(ids)
    rows = [await job(database, job_id) for job_id in ids]
    columns = [(r.queue, r.job_type, r.payload, r.state, r.priority, r.max_attempts) for r in rows]
    assert columns == [
        ("default", "test.record", {"n": 1}, JobState.READY, 3, 5),
        ("q2", "test.typed", {"n": 1}, JobState.SCHEDULED, 0, 2),
        ("default", "test.record", {"n": 1}, JobState.READY, 3, 5),
        ("default", "test.record", {"n": 2}, JobState.READY, 0, 5),
        ("default", "test.record", {"n": 1}, JobState.READY, 3, 5),
    ]


async def test_a_batch_with_an_invalid_job_adds_nothing(database: Database) -> None:
    bad = queue.NewJob("test.record", max_attempts=0)
    with pytest.raises(InvalidInput, match="max_attempts"):
        async with database.write() as session:
            await queue.Enqueuer(session).enqueue_many([queue.NewJob("test.record"), bad, bad])
    assert await count_jobs(database) == 0


async def test_job_runs_and_succeeds_with_id_and_attempt(
    database: Database, tmp_path: Path
) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        job_id = await queue.enqueue(session, "test.record", {"x": 1}, clock=clock)
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        assert await worker.run_until_idle("default") == 1
    assert recorder.calls == [(job_id, 1, {"x": 1})]
    done = await job(database, job_id)
    assert (done.state, done.attempt, done.lease_owner) == (JobState.SUCCEEDED, 1, None)


async def test_scheduled_job_waits_for_its_time(database: Database, tmp_path: Path) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        job_id = await queue.enqueue(
            session, "test.record", run_at=clock.now() + timedelta(minutes=5), clock=clock
        )
    assert (await job(database, job_id)).state == JobState.SCHEDULED
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        assert await worker.run_until_idle("default") == 0
        clock.advance(299)
        assert await worker.run_until_idle("default") == 0
        clock.advance(1)
        assert await worker.run_until_idle("default") == 1


async def test_priorities_order_claims_within_a_queue(database: Database, tmp_path: Path) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        low = await queue.enqueue(session, "test.record", priority=0, clock=clock)
        high = await queue.enqueue(session, "test.record", priority=10, clock=clock)
    async with worker_for(
        database, make_registry(recorder), clock, tmp_path, queues={"default": 1}
    ) as worker:
        await worker.run_until_idle("default")
    assert [call[0] for call in recorder.calls] == [high, low]


async def test_queues_are_separate(database: Database, tmp_path: Path) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        urgent = await queue.enqueue(session, recorder.urgent, clock=clock)
        await queue.enqueue(session, "test.record", clock=clock)
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        assert await worker.run_until_idle("critical") == 1
    assert [call[0] for call in recorder.calls] == [urgent]


async def test_retry_schedule_then_dead_letter_then_requeue(
    database: Database, tmp_path: Path
) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        job_id = await queue.enqueue(session, recorder.record, clock=clock)
    recorder.fail_times[job_id] = 3  # the job type's policy allows 3 attempts
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        assert await worker.run_until_idle("default") == 1
        first = await job(database, job_id)
        assert (first.state, first.attempt) == (JobState.RETRYING, 1)
        assert "planned failure" in (first.last_error or "")
        # full jitter: at most base · 2**0 = 10 s after the failure
        assert clock.now() <= first.run_at <= clock.now() + timedelta(seconds=10)
        clock.advance(10)
        assert await worker.run_until_idle("default") == 1
        second = await job(database, job_id)
        assert (second.state, second.attempt) == (JobState.RETRYING, 2)
        assert second.run_at <= clock.now() + timedelta(seconds=20)
        clock.advance(20)
        assert await worker.run_until_idle("default") == 1
        dead = await job(database, job_id)
        assert (dead.state, dead.attempt) == (JobState.DEAD, 3)
        assert dead.finished_at == clock.now()
        async with database.read() as session:
            audited = list(
                await session.scalars(
                    select(AuditEventRow.fields).where(AuditEventRow.code == "job.dead_lettered")
                )
            )
        assert len(audited) == 1  # the dead-letter is in the audit log, once
        clock.advance(3600)
        assert await worker.run_until_idle("default") == 0

        async with database.write() as session:
            assert await queue.requeue_dead(session, [job_id], clock=clock) == [job_id]
        assert await worker.run_until_idle("default") == 1
    again = await job(database, job_id)
    assert (again.state, again.attempt) == (JobState.SUCCEEDED, 1)
    assert [call[1] for call in recorder.calls] == [1, 2, 3, 1]


async def test_requeue_refuses_a_job_that_is_not_dead(database: Database) -> None:
    async with database.write() as session:
        job_id = await queue.enqueue(session, "test.record")
    with pytest.raises(IllegalTransition):
        async with database.write() as session:
            await queue.requeue_dead(session, [job_id])


async def test_purge_dead(database: Database, tmp_path: Path) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        job_id = await queue.enqueue(session, "test.record", max_attempts=1, clock=clock)
    recorder.fail_times[job_id] = 1
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        await worker.run_until_idle("default")
    assert (await job(database, job_id)).state == JobState.DEAD
    async with database.write() as session:
        assert await queue.purge_dead(session, job_ids=[job_id]) == 1
    with pytest.raises(NotFound):
        await job(database, job_id)


async def test_cancel_a_queued_job_but_not_a_finished_one(
    database: Database, tmp_path: Path
) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        cancelled = await queue.enqueue(session, "test.record", clock=clock)
    async with database.write() as session:
        await queue.cancel(session, cancelled, clock=clock)
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        assert await worker.run_until_idle("default") == 0
        async with database.write() as session:
            done = await queue.enqueue(session, "test.record", clock=clock)
        await worker.run_until_idle("default")
    with pytest.raises(IllegalTransition):
        async with database.write() as session:
            await queue.cancel(session, done, clock=clock)
    assert (await job(database, cancelled)).state == JobState.CANCELLED


async def test_expired_lease_goes_back_to_ready_and_the_attempt_counts(
    database: Database, tmp_path: Path
) -> None:
    clock, recorder = ManualClock(), Recorder()
    registry = make_registry(recorder)
    async with database.write() as session:
        job_id = await queue.enqueue(session, "test.record", clock=clock)
    async with (
        worker_for(database, registry, clock, tmp_path, lease_seconds=30) as dying,
        worker_for(database, registry, clock, tmp_path, lease_seconds=30) as rescuer,
    ):
        claimed = await dying.claim("default", 1)  # …and the worker dies here
        assert [c.id for c in claimed] == [job_id]
        clock.advance(29)
        assert await rescuer.reclaim() == 0
        assert await rescuer.run_until_idle("default") == 0
        clock.advance(2)
        assert await rescuer.reclaim() == 1
        reclaimed = await job(database, job_id)
        assert (reclaimed.state, reclaimed.attempt) == (JobState.READY, 1)
        assert await rescuer.run_until_idle("default") == 1
        # the dead worker's late outcome is fenced off
        assert await dying.execute(claimed[0]) is None
    done = await job(database, job_id)
    assert (done.state, done.attempt, done.lease_owner) == (JobState.SUCCEEDED, 2, None)
    assert [call[1] for call in recorder.calls] == [2, 1]


async def test_a_job_that_keeps_killing_workers_ends_dead(
    database: Database, tmp_path: Path
) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        job_id = await queue.enqueue(session, "test.record", max_attempts=2, clock=clock)
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        for _ in range(2):
            assert len(await worker.claim("default", 1)) == 1
            clock.advance(31)
            await worker.reclaim()
    assert (await job(database, job_id)).state == JobState.DEAD


async def test_heartbeat_keeps_the_lease(database: Database, tmp_path: Path) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with database.write() as session:
        job_id = await queue.enqueue(session, "test.record", clock=clock)
    async with worker_for(database, make_registry(recorder), clock, tmp_path) as worker:
        claimed = await worker.claim("default", 1)
        pending = asyncio.Event()
        task = asyncio.create_task(pending.wait())
        worker._running[job_id] = (claimed[0], task)  # as the claim loop would
        for _ in range(5):
            clock.advance(20)
            assert await worker.heartbeat() == set()
            assert await worker.reclaim() == 0
        worker._running.clear()
        task.cancel()
    assert (await job(database, job_id)).state == JobState.RUNNING


async def test_trace_context_travels_inside_the_job(database: Database, tmp_path: Path) -> None:
    clock, seen = ManualClock(), []
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331

    async def capture(context: JobContext) -> None:
        seen.append(trace.get_current_span().get_span_context())

    registry = make_registry(Recorder())
    registry.add(JobType("test.trace", capture))
    parent = NonRecordingSpan(SpanContext(trace_id, span_id, True, TraceFlags(1)))
    with trace.use_span(parent):
        async with database.write() as session:
            job_id = await queue.enqueue(session, "test.trace", clock=clock)
    stored = await job(database, job_id)
    assert stored.trace_context["traceparent"] == (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    )
    async with worker_for(database, registry, clock, tmp_path) as worker:
        await worker.run_until_idle("default")
    assert seen[0].trace_id == trace_id


async def test_periodic_job_runs_once_with_two_workers(database_url: str, tmp_path: Path) -> None:
    clock, recorder = ManualClock(), Recorder()
    schedule = Periodic("every-five-minutes", "*/5 * * * *", "test.record")
    first_db, second_db = Database(database_url), Database(database_url)
    try:
        async with (
            worker_for(first_db, make_registry(recorder, [schedule]), clock, tmp_path) as one,
            worker_for(second_db, make_registry(recorder, [schedule]), clock, tmp_path) as two,
        ):
            for _minute in range(12):  # 00:00 … 00:11 → slots 00:00, 00:05, 00:10
                for _round in range(3):
                    await asyncio.gather(one.tick(), two.tick(), one.tick(), two.tick())
                await asyncio.gather(one.run_until_idle("default"), two.run_until_idle("default"))
                clock.advance(60)
        async with first_db.read() as session:
            slots = list(
                await session.scalars(select(Job.unique_key).where(Job.job_type == "test.record"))
            )
    finally:
        await first_db.dispose()
        await second_db.dispose()
    assert sorted(slots) == [
        "periodic:every-five-minutes:2026-01-01T00:00:00+00:00",
        "periodic:every-five-minutes:2026-01-01T00:05:00+00:00",
        "periodic:every-five-minutes:2026-01-01T00:10:00+00:00",
    ]
    assert len(recorder.calls) == 3


async def test_graceful_shutdown_finishes_or_releases_and_loses_nothing(
    database: Database, tmp_path: Path
) -> None:
    clock = ManualClock()
    started, finished = [], []
    gate = asyncio.Event()

    async def slow(context: JobContext) -> None:
        started.append(context.job_id)
        if context.payload["slow"]:
            await gate.wait()  # never opened: this one outlives the grace period
        finished.append(context.job_id)

    registry = make_registry(Recorder())
    registry.add(JobType("test.slow", slow))
    async with database.write() as session:
        quick = await queue.enqueue(session, "test.slow", {"slow": False}, clock=clock)
        stuck = await queue.enqueue(session, "test.slow", {"slow": True}, clock=clock)
        waiting = [
            await queue.enqueue(session, "test.slow", {"slow": False}, priority=-1, clock=clock)
            for _ in range(3)
        ]
    async with worker_for(
        database,
        registry,
        clock,
        tmp_path,
        queues={"default": 2},
        grace_seconds=0.5,
        poll_seconds=0.05,
        run_periodic=False,
    ) as worker:
        task = asyncio.create_task(worker.run())
        for _ in range(400):
            if stuck in started and quick in finished:
                break
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(task, timeout=30)
    states = {job_id: (await job(database, job_id)) for job_id in [quick, stuck, *waiting]}
    assert states[stuck].state == JobState.READY
    assert states[stuck].attempt == 0  # the interrupted attempt is handed back
    assert states[stuck].lease_owner is None
    for job_id in [quick, *waiting]:
        assert states[job_id].state in (JobState.SUCCEEDED, JobState.READY)
        if states[job_id].state == JobState.SUCCEEDED:
            assert job_id in finished


async def test_running_worker_wakes_and_processes(database: Database, tmp_path: Path) -> None:
    clock, recorder = ManualClock(), Recorder()
    async with worker_for(
        database, make_registry(recorder), clock, tmp_path, poll_seconds=0.05, run_periodic=False
    ) as worker:
        task = asyncio.create_task(worker.run())
        async with database.write() as session:
            ids = await queue.Enqueuer(session, clock=clock).enqueue_many(
                [queue.NewJob("test.record", {"i": i}) for i in range(20)],
            )
        for _ in range(1000):
            if len(recorder.calls) >= 20 and worker.running == 0:
                break
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(task, timeout=30)
    assert sorted(call[0] for call in recorder.calls) == sorted(ids)
    async with database.read() as session:
        stats = {item.queue: item for item in await queue.stats(session, clock.now())}
    assert stats["default"].depth[JobState.SUCCEEDED] == 20


async def test_job_store_check(database: Database, tmp_path: Path) -> None:
    await check_job_store(database)


async def test_metrics_count_outcomes_and_sample_depth(database: Database, tmp_path: Path) -> None:
    counted = CollectorRegistry()

    def value(name: str, labels: dict[str, str]) -> float:
        return counted.get_sample_value(name, labels) or 0.0

    clock, recorder = ManualClock(), Recorder()
    succeeded = {"job_type": "test.record", "outcome": "succeeded"}
    before = value("keel_job_duration_seconds_count", succeeded)
    retries_before = value("keel_job_retries_total", {"job_type": "test.record"})
    async with database.write() as session:
        await queue.enqueue(session, recorder.record, clock=clock)
        failing = await queue.enqueue(session, recorder.record, clock=clock)
        await queue.enqueue(session, recorder.record, run_at=clock.now(), clock=clock)
    recorder.fail_times[failing] = 1
    jobs = JobMetrics(counted)
    async with worker_for(
        database, make_registry(recorder), clock, tmp_path, metrics=jobs
    ) as worker:
        await worker.run_until_idle("default")
        async with database.write() as session:
            await queue.enqueue(session, recorder.record, clock=clock)
        clock.advance(0.5)
        await worker.sample()
    assert value("keel_job_duration_seconds_count", succeeded) == before + 2
    assert value("keel_job_retries_total", {"job_type": "test.record"}) == retries_before + 1
    assert value("keel_jobs_queue_depth", {"queue": "default", "state": "succeeded"}) == 2
    assert value("keel_jobs_queue_depth", {"queue": "default", "state": "ready"}) == 1
    assert value("keel_jobs_oldest_ready_age_seconds", {"queue": "default"}) == 0.5


async def test_a_batch_wakes_each_queue_once_at_commit(database: Database, backend: str) -> None:
    """PostgreSQL: one notification per queue per INSERT statement, sent only at commit."""
    if backend != "postgres":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    heard: list[str] = []
    listening = await asyncpg.connect(asyncpg_dsn(database.url))
    try:
        await listening.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
        async with database.write() as session:
            await queue.Enqueuer(session).enqueue_many(
                [queue.NewJob("test.record", queue=name) for name in ["a", "b"] * 500]
                + [queue.NewJob("test.record", queue="c", run_at=ManualClock().now())],
            )
            await asyncio.sleep(0.2)
            assert heard == []  # nothing before the commit
        async with database.write() as session:
            requeued = await queue.enqueue(session, "test.record", queue="d")
            await session.execute(
                queries.jobs.update()
                .where(queries.jobs.c.id == requeued)
                .values(state=JobState.RUNNING)
            )
        async with database.write() as session:  # a row that becomes ready by an UPDATE
            await session.execute(
                queries.jobs.update()
                .where(queries.jobs.c.id == requeued)
                .values(state=JobState.READY)
            )
        for _ in range(200):
            if len(heard) >= 5:
                break
            await asyncio.sleep(0.01)
    finally:
        await listening.close()
    assert sorted(heard) == ["a", "b", "c", "d", "d"]


@asynccontextmanager
async def idle_listening_worker(
    database: Database, recorder: Recorder, clock: ManualClock, tmp_path: Path, **config: Any
) -> AsyncIterator[Worker]:
    """A running worker whose queue is drained and whose LISTEN is up, polling a minute
    apart: whatever it writes next is not carried by a poll. Stopped (and awaited) on exit."""
    async with worker_for(
        database,
        make_registry(recorder),
        clock,
        tmp_path,
        poll_seconds=0.05,
        listen_poll_seconds=60,
        run_periodic=False,
        **config,
    ) as worker:
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.3)  # the listener is up: no more polling to ride on
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, timeout=30)


async def test_a_success_is_recorded_at_once_while_the_worker_idles(
    database: Database, tmp_path: Path
) -> None:
    """With the queue drained, nothing claims again soon; the success is still written within
    ``success_flush_seconds`` (not at the next poll, a minute away here)."""
    clock, recorder = ManualClock(), Recorder()
    async with idle_listening_worker(database, recorder, clock, tmp_path) as worker:
        async with database.write() as session:
            job_id = await queue.enqueue(session, "test.record", clock=clock)
        for _ in range(500):
            if (await job(database, job_id)).state == JobState.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        assert (await job(database, job_id)).state == JobState.SUCCEEDED
        assert worker.running == 0


async def test_a_waiting_success_rides_on_the_next_claim(
    database: Database, backend: str, tmp_path: Path
) -> None:
    """Within ``success_flush_seconds`` a success is not written on its own: the claim of
    the next NOTIFY records it (one commit for both); stopping writes whatever still waits."""
    if backend != "postgres":
        pytest.skip("LISTEN/NOTIFY wake-ups are PostgreSQL's")
    clock, recorder = ManualClock(), Recorder()
    async with idle_listening_worker(
        database, recorder, clock, tmp_path, success_flush_seconds=20
    ) as worker:
        first = await enqueue(database, "test.record", clock=clock)
        for _ in range(500):
            if recorder.calls and worker.running == 0:
                break
            await asyncio.sleep(0.01)
        assert [call[0] for call in recorder.calls] == [first]
        assert (await job(database, first)).state == JobState.RUNNING  # not written yet
        second = await enqueue(database, "test.record", clock=clock)
        for _ in range(500):
            if (await job(database, first)).state == JobState.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        assert (await job(database, first)).state == JobState.SUCCEEDED
    assert (await job(database, second)).state == JobState.SUCCEEDED

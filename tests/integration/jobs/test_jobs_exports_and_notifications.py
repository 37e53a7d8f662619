"""Exports on the ``exports`` queue and webhook notifications, on both backends."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tests.support.app import World, make_settings
from tests.support.jobs import Recorder, make_registry, worker_for

from keel.db.engine import Database
from keel.db.tables import Export
from keel.db.tables_audit import AuditEvent as AuditEventRow
from keel.db.tables_jobs import Job
from keel.domain import orgs
from keel.jobs import queries, queue
from keel.jobs.metrics import JobMetrics
from keel.jobs.notifications import enqueue_quota_warning
from keel.jobs.registry import DeadLetter
from keel.jobs.states import JobState
from keel.jobs.worker import Worker
from keel.settings import Settings
from keel.storage import LocalDirectoryStore
from keel.testing import ManualClock


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The app only enqueues; these tests run the worker by hand."""
    return make_settings(database_url, str(tmp_path / "blobs"), inprocess_worker="off")


class Webhook:
    """Answers with the statuses queued in ``answers`` and records every request."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.answers.pop(0) if self.answers else 204)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


async def jobs_of(database: Database, job_type: str) -> list[Job]:
    async with database.read() as session:
        return list(await session.scalars(select(Job).where(Job.job_type == job_type)))


async def set_webhook(database: Database, org_id: str, url: str | None) -> None:
    async with database.write() as session:
        await orgs.set_webhook(session, org_id, url)


@dataclass(frozen=True)
class RequestedExport:
    """An export Alice requested through the API, its one ``exports.run`` job, and
    what it takes to run that job by hand: a manual clock and workers on one registry."""

    id: str
    job: Job
    database: Database
    clock: ManualClock
    worker: Callable[..., AbstractAsyncContextManager[Worker]]
    """``worker_for`` on this export's database, registry and clock."""
    shown: Callable[[], Awaitable[dict[str, Any]]]
    """The export as the API shows it to Alice."""
    counted: CollectorRegistry
    """Where those workers count (``keel_jobs_dead_total``, …)."""


RequestExport = Callable[[str], Awaitable[RequestedExport]]


@pytest.fixture
def request_export(
    app: FastAPI, client: httpx.AsyncClient, world: World, settings: Settings, tmp_path: Path
) -> RequestExport:
    """``await request_export(format)``: Alice asks for an export; its job is waiting."""
    database: Database = app.state.services.database
    headers = world.alice.headers

    async def request(export_format: str) -> RequestedExport:
        body = {"format": export_format}
        export_id = (await client.post("/v1/exports", json=body, headers=headers)).json()["id"]
        [job] = await jobs_of(database, "exports.run")

        async def shown() -> dict[str, Any]:
            return dict((await client.get(f"/v1/exports/{export_id}", headers=headers)).json())

        clock = ManualClock()
        registry = make_registry(Recorder())
        counted = CollectorRegistry()
        worker = partial(
            worker_for,
            database,
            registry,
            clock,
            tmp_path,
            settings=settings,
            metrics=JobMetrics(counted),
        )
        return RequestedExport(export_id, job, database, clock, worker, shown, counted)

    return request


async def test_export_is_enqueued_with_its_row_and_produced_by_the_exports_queue(
    client: httpx.AsyncClient, world: World, request_export: RequestExport
) -> None:
    await client.post(
        "/v1/recognitions",
        json={"recipient_id": world.bob.id, "message": "thanks"},
        headers=world.alice.headers,
    )
    export = await request_export("json")
    assert (export.job.queue, export.job.state, export.job.unique_key) == (
        "exports",
        JobState.READY,
        f"export:{export.id}",
    )
    await set_webhook(export.database, world.alice.org_id, "https://hooks.example.test/keel")
    hook = Webhook()
    async with export.worker(http=hook.client()) as worker:
        assert await worker.run_until_idle("exports") == 1
        done = await export.shown()
        assert (done["status"], done["row_count"]) == ("succeeded", 1)
        assert await worker.run_until_idle("default") == 1
    [request] = hook.requests
    [ready] = await jobs_of(export.database, "notifications.export_ready")
    body = json.loads(request.content)
    assert str(request.url) == "https://hooks.example.test/keel"
    assert request.headers["Idempotency-Key"] == ready.id == body["id"]
    assert request.headers["Keel-Event"] == "export.ready"
    assert body["type"] == "export.ready"
    assert body["org_id"] == world.alice.org_id
    assert body["data"]["export_id"] == export.id
    assert body["data"]["row_count"] == 1


async def test_export_job_run_twice_is_harmless(request_export: RequestExport) -> None:
    """At-least-once: a second delivery of the same export job changes nothing."""
    export = await request_export("csv")
    async with export.worker() as worker:
        await worker.run_until_idle("exports")
        first = await export.shown()
        async with export.database.write() as session:  # the same job delivered again
            await session.execute(
                queries.jobs.update()
                .where(queries.jobs.c.id == export.job.id)
                .values(state="ready")
            )
        await worker.run_until_idle("exports")
    second = await export.shown()
    assert second == first
    assert len(await jobs_of(export.database, "notifications.export_ready")) == 1


async def test_webhook_5xx_retries_in_the_call_then_by_the_job_and_4xx_dead_letters(
    database: Database, tmp_path: Path
) -> None:
    async with database.write() as session:
        org = await orgs.create_org(session, "Hooked")
    await set_webhook(database, org.id, "http://127.0.0.1:9/hook")
    clock = ManualClock()
    async with database.write() as session:
        warning = await enqueue_quota_warning(
            session,
            org_id=org.id,
            quota="recognitions",
            used=90,
            limit=100,
            period="2026-01-01",
            clock=clock,
        )
        again = await enqueue_quota_warning(
            session,
            org_id=org.id,
            quota="recognitions",
            used=95,
            limit=100,
            period="2026-01-01",
            clock=clock,
        )
    assert warning == again  # one warning per org, quota and period
    # The POST carries an Idempotency-Key, so the first attempt retries inside the call
    # (three tries in all), then the job's own backoff takes over.
    hook = Webhook(503, 503, 503, 400)
    async with worker_for(
        database, make_registry(Recorder()), clock, tmp_path, http=hook.client()
    ) as worker:
        assert await worker.run_until_idle("critical") == 1
        async with database.read() as session:
            retrying = await queue.get(session, warning)
        assert retrying.state == JobState.RETRYING
        clock.advance(3600)
        assert await worker.run_until_idle("critical") == 1
    async with database.read() as session:
        dead = await queue.get(session, warning)
    assert dead.state == JobState.DEAD
    assert "400" in (dead.last_error or "")
    body = json.loads(hook.requests[0].content)
    assert body["type"] == "quota.warning"
    assert body["data"] == {
        "quota": "recognitions",
        "used": 90,
        "limit": 100,
        "period": "2026-01-01",
    }
    assert [r.headers["Keel-Delivery-Attempt"] for r in hook.requests] == ["1", "1", "1", "2"]


async def test_org_without_webhook_is_skipped(database: Database, tmp_path: Path) -> None:
    clock = ManualClock()
    async with database.write() as session:
        org = await orgs.create_org(session, "Quiet")
        job_id = await enqueue_quota_warning(
            session, org_id=org.id, quota="q", used=1, limit=1, period="p", clock=clock
        )
    hook = Webhook()
    async with worker_for(
        database, make_registry(Recorder()), clock, tmp_path, http=hook.client()
    ) as worker:
        await worker.run_until_idle("critical")
    async with database.read() as session:
        assert (await queue.get(session, job_id)).state == JobState.SUCCEEDED
    assert hook.requests == []


async def quota_warning_for(database: Database, clock: ManualClock, url: str) -> str:
    async with database.write() as session:
        org = await orgs.create_org(session, "Hooked")
    await set_webhook(database, org.id, url)
    async with database.write() as session:
        return await enqueue_quota_warning(
            session, org_id=org.id, quota="q", used=9, limit=10, period="p", clock=clock
        )


async def test_webhook_retry_after_is_honoured_by_the_jobs_backoff(
    database: Database, tmp_path: Path
) -> None:
    clock = ManualClock()
    job_id = await quota_warning_for(database, clock, "https://hooks.example.test/keel")
    requests: list[httpx.Request] = []

    def busy(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(429, headers={"Retry-After": "600"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(busy))
    async with worker_for(database, make_registry(Recorder()), clock, tmp_path, http=client) as w:
        assert await w.run_until_idle("critical") == 1
    async with database.read() as session:
        job = await queue.get(session, job_id)
    assert (job.state, job.attempt) == (JobState.RETRYING, 1)
    # 600 s is past the in-call retries' 10 s ceiling, so the first answer ended them,
    # and the job's own backoff (at most 5 s for a first failure) became 600 s.
    assert len(requests) == 1
    assert job.run_at.replace(tzinfo=None) >= clock.now().replace(tzinfo=None) + timedelta(
        seconds=600
    )


async def test_a_job_for_an_open_breaker_is_deferred_without_a_request_or_an_attempt(
    database: Database, tmp_path: Path
) -> None:
    clock = ManualClock()
    job_id = await quota_warning_for(database, clock, "https://hooks.example.test/keel")
    hook = Webhook()
    async with worker_for(
        database, make_registry(Recorder()), clock, tmp_path, http=hook.client()
    ) as worker:
        webhooks = worker.resources.webhooks
        registry = webhooks.registry
        assert registry is not None
        breaker = webhooks.get("hooks.example.test").breaker
        await registry.force_open(breaker.name)  # an operator's `keel breakers force-open`
        assert await worker.run_until_idle("critical") == 1
        async with database.read() as session:
            deferred = await queue.get(session, job_id)
        assert (deferred.state, deferred.attempt) == (JobState.RETRYING, 0)
        assert hook.requests == []
        await registry.force_closed(breaker.name)
        clock.advance(3600)
        assert await worker.run_until_idle("critical") == 1
    async with database.read() as session:
        done = await queue.get(session, job_id)
    assert (done.state, done.attempt) == (JobState.SUCCEEDED, 1)
    assert [r.headers["Keel-Delivery-Attempt"] for r in hook.requests] == ["1"]


async def test_a_delivery_whose_retry_the_breaker_refused_still_spends_its_attempt(
    database: Database, tmp_path: Path
) -> None:
    """Else a host that never recovers would have its probes deferred for ever."""
    clock = ManualClock()
    job_id = await quota_warning_for(database, clock, "https://hooks.example.test/keel")
    settings = make_settings(
        database.url,
        str(tmp_path / "blobs"),
        breaker_window_size=1,
        breaker_minimum_calls=1,
        webhooks_retry_attempts=3,
    )
    hook = Webhook(503, 503, 503)
    async with worker_for(
        database,
        make_registry(Recorder()),
        clock,
        tmp_path,
        http=hook.client(),
        settings=settings,
    ) as worker:
        assert await worker.run_until_idle("critical") == 1
    async with database.read() as session:
        job = await queue.get(session, job_id)
    assert (job.state, job.attempt) == (JobState.RETRYING, 1)
    assert len(hook.requests) == 1  # the first 503 opened the breaker; no retry was sent
    assert "circuit breaker" in (job.last_error or "")
    assert job.run_at.replace(tzinfo=None) >= clock.now().replace(tzinfo=None) + timedelta(
        seconds=settings.webhooks_breaker_wait_seconds
    )


class RefusingStore(LocalDirectoryStore):
    """A blob store that cannot open a blob (a full disk, an open storage breaker)."""

    async def begin_write(self, namespace: str) -> Any:
        raise OSError("no space left on device")


async def dead_letters(database: Database) -> list[dict[str, Any]]:
    async with database.read() as session:
        query = select(AuditEventRow.fields).where(AuditEventRow.code == "job.dead_lettered")
        return [json.loads(fields) for fields in await session.scalars(query)]


def dead_exports_counted(export: RequestedExport) -> float:
    """``keel_jobs_dead_total`` for the export job, by the export's workers."""
    labels = {"job_type": "exports.run"}
    return export.counted.get_sample_value("keel_jobs_dead_total", labels) or 0.0


async def test_export_whose_job_fails_its_last_attempt_becomes_failed(
    request_export: RequestExport, tmp_path: Path
) -> None:
    """The export run cannot even open its blob, five times: the job dies, the export fails."""
    export = await request_export("csv")
    job = export.job
    async with export.worker() as worker:
        worker.resources = replace(worker.resources, store=RefusingStore(tmp_path / "refusing"))
        for attempt in range(1, job.max_attempts + 1):
            assert await worker.run_until_idle("exports") == 1
            shown = await export.shown()
            if attempt < job.max_attempts:
                assert shown["status"] == "running"  # retrying: the export is still on its way
            export.clock.advance(3600)
    async with export.database.read() as session:
        assert (await queue.get(session, job.id)).state == JobState.DEAD
    assert shown["status"] == "failed"
    assert shown["error"] == "the export job failed on its last attempt (5): OSError"
    assert shown["finished_at"] is not None
    assert [letter["job_id"] for letter in await dead_letters(export.database)] == [job.id]
    assert dead_exports_counted(export) == 1


async def test_export_whose_worker_dies_on_the_last_attempt_becomes_failed(
    request_export: RequestExport,
) -> None:
    """Every attempt's worker dies mid-export (its lease expires): the export fails, not hangs."""
    export = await request_export("json")
    job, database, clock = export.job, export.database, export.clock
    async with export.worker() as dying, export.worker() as rescuer:
        for attempt in range(1, job.max_attempts + 1):
            [claimed] = await dying.claim("exports", 1)
            assert claimed.attempt == attempt
            async with database.write() as session:  # the run got as far as starting the export
                await session.execute(
                    update(Export)
                    .where(Export.id == export.id)
                    .values(status="running", started_at=clock.now())
                )
            clock.advance(dying.config.lease_seconds + 1)  # …and its worker died
            assert await rescuer.reclaim() == 1
    async with database.read() as session:
        dead = await queue.get(session, job.id)
    assert (dead.state, dead.attempt) == (JobState.DEAD, job.max_attempts)
    shown = await export.shown()
    assert shown["status"] == "failed"
    assert shown["error"] == "the export job failed on its last attempt (5): lease expired"
    [letter] = await dead_letters(database)
    assert (letter["job_id"], letter["attempts"]) == (job.id, job.max_attempts)
    assert dead_exports_counted(export) == 1


async def test_a_failing_dead_hook_still_dead_letters_the_job(
    database: Database, tmp_path: Path
) -> None:
    clock = ManualClock()

    async def broken_hook(session: AsyncSession, letter: DeadLetter) -> None:
        await session.execute(update(Export).values(error="half-done"))
        raise RuntimeError("the hook itself fails")

    recorder = Recorder()
    doomed = replace(recorder.record, name="test.doomed", on_dead=broken_hook)
    async with database.write() as session:
        job_id = await queue.enqueue(session, doomed, max_attempts=1, clock=clock)
    recorder.fail_times[job_id] = 1
    registry = make_registry(recorder)
    registry.add(doomed)
    async with worker_for(database, registry, clock, tmp_path) as worker:
        assert await worker.run_until_idle("default") == 1
    async with database.read() as session:
        assert (await queue.get(session, job_id)).state == JobState.DEAD

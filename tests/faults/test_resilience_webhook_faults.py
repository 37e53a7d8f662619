"""Webhook targets going down or hanging, for real, with the app's in-process worker.

Two receivers on 127.0.0.1 (``tests/support/webhook_server.py``): organisation A's,
which we break, and organisation B's, which stays healthy. Notifications are triggered
through the API (an export finishing enqueues ``export.ready``) and delivered by the
real worker over real TCP. What must hold:

* A's notifications stay queued (``retrying``, never ``dead``) and retry with backoff;
* A's host gets its own breaker, which opens; while it is open A's new notifications
  are deferred without a request and without spending an attempt;
* B's notifications keep being delivered all along (tenant isolation);
* API requests answer while a delivery hangs — they never wait for the webhook;
* once A's receiver is back, every queued notification is delivered.

Job due times and breaker waits run on the app's manual clock, which the tests advance;
real time only bounds the polling loops and the webhook timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from tests.support.app import Member, World, make_settings, seed_world
from tests.support.webhook_server import WebhookServer

from keel.api.services import Services
from keel.db.engine import Database
from keel.db.tables_jobs import Job
from keel.domain import orgs
from keel.jobs.notifications import webhook_host
from keel.jobs.states import QUEUED, JobState
from keel.resilience import BreakerState, CircuitBreaker
from keel.settings import Settings
from keel.testing import ManualClock

WAIT = 10.0  # breaker wait in OPEN, on the manual clock
NOTIFY = "notifications.export_ready"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        str(tmp_path / "blobs"),
        inprocess_worker="on",
        breaker_window_size=4,
        breaker_minimum_calls=2,
        webhooks_breaker_wait_seconds=WAIT,
        breaker_half_open_calls=1,
        webhooks_retry_attempts=2,
        webhooks_timeout_seconds=1.0,
        webhook_timeout_seconds=1.0,
    )


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[WebhookServer, WebhookServer]]:
    broken, healthy = await WebhookServer().start(), await WebhookServer().start()
    try:
        yield broken, healthy
    finally:
        await broken.stop()
        await healthy.stop()


@pytest.fixture
async def world(
    app: FastAPI,
    client: httpx.AsyncClient,
    receivers: tuple[WebhookServer, WebhookServer],
) -> World:
    world = await seed_world(app.state.services.database)
    broken, healthy = receivers
    async with app.state.services.database.write() as session:
        await orgs.set_webhook(session, world.alice.org_id, broken.url)
        await orgs.set_webhook(session, world.mallory.org_id, healthy.url)
    return world


async def eventually(condition: Callable[[], object], *, seconds: float = 20.0) -> None:
    """Poll ``condition`` every 50 ms, at most ``seconds`` of real time."""
    for _ in range(int(seconds / 0.05)):
        if await _value(condition):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition never held within {seconds} s")


async def _value(condition: Callable[[], object]) -> bool:
    result = condition()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


async def export(client: httpx.AsyncClient, member: Member) -> str:
    response = await client.post("/v1/exports", json={"format": "json"}, headers=member.headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def notifications(database: Database, org_id: str) -> list[Job]:
    async with database.read() as session:
        rows = await session.scalars(select(Job).where(Job.job_type == NOTIFY))
    return [job for job in rows if job.payload["org_id"] == org_id]


def breaker_of(services: Services, server: WebhookServer) -> CircuitBreaker:
    return services.webhooks.get(webhook_host(server.url)).breaker


async def recover(
    clock: ManualClock, database: Database, org_id: str, server: WebhookServer
) -> list[Job]:
    """Advance the manual clock until ``org_id``'s jobs all succeed.

    The clock moves only while no job is running or due, so no delivery is ever in
    flight across a jump: the breaker times calls with this clock, and a call that
    straddled a 20 s jump would count as a slow call and re-open it.
    """
    for _ in range(400):
        jobs = await notifications(database, org_id)
        if jobs and all(job.state == JobState.SUCCEEDED for job in jobs):
            return jobs
        now = clock.now()
        busy = any(
            job.state == JobState.RUNNING
            or (job.state in QUEUED and job.run_at.replace(tzinfo=now.tzinfo) <= now)
            for job in jobs
        )
        if not busy:
            clock.advance(20)  # under the 30 s lease
        await asyncio.sleep(0.05)
    raise AssertionError("queued notifications were not delivered after recovery")


async def test_webhook_down_queues_with_backoff_opens_its_own_breaker_and_delivers_on_return(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: World,
    clock: ManualClock,
    receivers: tuple[WebhookServer, WebhookServer],
) -> None:
    services: Services = app.state.services
    database = services.database
    broken, healthy = receivers
    await broken.go_down()  # connections refused

    for _ in range(3):
        await export(client, world.alice)
    await export(client, world.mallory)

    await eventually(lambda: breaker_of(services, broken).state is BreakerState.OPEN)
    await eventually(lambda: len(healthy.delivered()) == 1)  # B unaffected
    assert breaker_of(services, healthy).state is BreakerState.CLOSED

    async def all_a_waiting() -> bool:
        jobs = await notifications(database, world.alice.org_id)
        return len(jobs) == 3 and all(j.state == JobState.RETRYING for j in jobs)

    await eventually(all_a_waiting)
    now = clock.now()
    for job in await notifications(database, world.alice.org_id):
        assert job.attempt < job.max_attempts  # queued, not dead-lettered
        assert job.run_at.replace(tzinfo=now.tzinfo) > now  # backed off into the future

    # While A's breaker is open its new notifications are deferred without a request
    # and without spending an attempt; B's are still delivered.
    before = await notifications(database, world.alice.org_id)
    await export(client, world.alice)
    await export(client, world.mallory)
    await eventually(lambda: len(healthy.delivered()) == 2)

    async def deferred_job() -> Job | None:
        known = {job.id for job in before}
        fresh = [j for j in await notifications(database, world.alice.org_id) if j.id not in known]
        return fresh[0] if fresh and fresh[0].state == JobState.RETRYING else None

    await eventually(deferred_job)
    job = await deferred_job()
    assert job is not None
    assert job.attempt == 0
    assert "circuit breaker" in (job.last_error or "")
    assert broken.received == []  # the host was never even reached

    listed = {status.name for status in await services.dependencies.registry.list()}
    assert {
        f"webhooks.127.0.0.1_{broken.port}",
        f"webhooks.127.0.0.1_{healthy.port}",
    } <= listed

    await broken.come_back("ok")
    delivered = await recover(clock, database, world.alice.org_id, broken)
    assert {job.id for job in delivered} <= broken.delivered_keys()
    assert breaker_of(services, broken).state is BreakerState.CLOSED


async def test_hanging_webhook_never_holds_up_api_requests_and_is_retried(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: World,
    clock: ManualClock,
    receivers: tuple[WebhookServer, WebhookServer],
) -> None:
    services: Services = app.state.services
    database = services.database
    broken, healthy = receivers
    broken.set_mode("hang")

    await export(client, world.alice)
    await eventually(lambda: broken.hanging >= 1)

    # A delivery is hanging on A's receiver right now: the API answers regardless.
    recognition = await client.post(
        "/v1/recognitions",
        json={"recipient_id": world.bob.id, "message": "thanks"},
        headers=world.alice.headers,
    )
    assert recognition.status_code == 201
    await export(client, world.alice)
    assert broken.hanging >= 1  # still hanging when the answers came back
    await export(client, world.mallory)
    await eventually(lambda: len(healthy.delivered()) == 1)

    async def timed_out() -> bool:
        jobs = await notifications(database, world.alice.org_id)
        return len(jobs) == 2 and all(j.state == JobState.RETRYING for j in jobs)

    await eventually(timed_out)  # the per-attempt timeout ended the hang
    assert all(r.answered is None for r in broken.received)

    broken.set_mode("ok")
    delivered = await recover(clock, database, world.alice.org_id, broken)
    assert {job.id for job in delivered} <= broken.delivered_keys()

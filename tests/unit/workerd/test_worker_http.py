"""The worker's probe port in process: the API's health+json, drain, lease loop, problems."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from keel.observe.health import HealthCheck, HealthRegistry, Observation, Status
from keel.observe.lifecycle import Lifecycle
from keel.observe.watchdog import LoopWatchdog
from keel.testing import ManualClock
from keel.workerd.checks import lease_loop_check
from keel.workerd.http import Probes, probe_app

HEALTH = "application/health+json"
API_BODY_KEYS = {"status", "version", "releaseId", "serviceId", "description", "checks"}


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.lifecycle = Lifecycle(self.clock)
        self.health = HealthRegistry(clock=self.clock, cache_seconds=0, default_timeout=1.0)
        self.heartbeat_at: float | None = None
        self.database_up = True

        async def database() -> Observation | None:
            if not self.database_up:
                raise ConnectionError("down")
            return None

        async def metrics() -> tuple[bytes, str]:
            return b"keel_jobs_queue_depth 0\n", "text/plain; version=0.0.4"

        self.health.register(HealthCheck("database", "datastore", "responseTime", database))
        self.health.register(lease_loop_check(lambda: self.heartbeat_at, 30.0, self.clock))
        self.probes = Probes(
            health=self.health,
            lifecycle=self.lifecycle,
            watchdog=LoopWatchdog(),
            metrics=metrics,
            release_id="r1",
            service_id="keel-worker",
            description="worker",
            live_lag_warn_seconds=1.0,
        )


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=probe_app(world.probes))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        yield client


async def test_live_answers_the_apis_body_and_touches_no_dependency(
    world: World, http: httpx.AsyncClient
) -> None:
    world.database_up = False
    live = await http.get("/live")
    assert live.status_code == 200
    assert live.headers["content-type"] == HEALTH
    assert set(live.json()) == API_BODY_KEYS
    assert list(live.json()["checks"]) == ["eventloop:lag"]


async def test_ready_passes_with_a_fresh_heartbeat_and_fails_without_one(
    world: World, http: httpx.AsyncClient
) -> None:
    starting = await http.get("/ready")
    assert starting.status_code == 503
    assert starting.json()["checks"]["leases:heartbeatAge"][0]["output"] == "no heartbeat yet"

    world.heartbeat_at = world.clock.monotonic()
    world.clock.advance(10)
    ready = await http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == Status.PASS
    assert ready.json()["checks"]["leases:heartbeatAge"][0]["observedValue"] == 10.0

    world.clock.advance(25)  # 35 s since the last heartbeat: past the 30 s lease
    stale = await http.get("/ready")
    assert stale.status_code == 503
    assert "past the 30s lease" in stale.json()["checks"]["leases:heartbeatAge"][0]["output"]


async def test_ready_fails_when_the_database_does_and_while_draining(
    world: World, http: httpx.AsyncClient
) -> None:
    world.heartbeat_at = world.clock.monotonic()
    world.database_up = False
    assert (await http.get("/ready")).status_code == 503
    world.database_up = True
    world.lifecycle.begin_draining()
    draining = await http.get("/ready")
    assert draining.status_code == 503
    assert draining.json()["checks"]["lifecycle:draining"][0]["status"] == "fail"
    assert (await http.get("/live")).status_code == 200
    verbose = await http.get("/ready?verbose")
    assert verbose.text.endswith("readyz check failed\n")
    assert "[-]lifecycle failed: draining: shutting down" in verbose.text


async def test_metrics_and_problems(http: httpx.AsyncClient) -> None:
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.text == "keel_jobs_queue_depth 0\n"
    for method, path, status in (("GET", "/nope", 404), ("POST", "/ready", 405)):
        answer = await http.request(method, path)
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == status

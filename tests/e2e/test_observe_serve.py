"""``keel serve`` for real: draining on SIGTERM under load, metrics across two workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from keel.settings import Settings
from tests.support.app import World, seed_database
from tests.support.policies import generous_policy
from tests.support.processes import KeelServer, keel_server, server_env

pytestmark = pytest.mark.e2e

ROUTE = "/v1/recognitions/{recognition_id}"


@contextmanager
def keel_serve(
    database_url: str, workdir: Path, *, workers: int = 1, **overrides: str
) -> Iterator[KeelServer]:
    """A server logging JSON, whose only load is the test's own, up once ``/ready`` passes."""
    env = server_env(
        database_url,
        workdir,
        {
            "KEEL_LOG_FORMAT": "json",
            "KEEL_AUTH_CACHE_SECONDS": "5",
            "KEEL_RATELIMIT_POLICY": str(generous_policy(workdir)),
            **overrides,
        },
    )
    if "PROMETHEUS_MULTIPROC_DIR" not in overrides:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with keel_server(env, workdir, workers=workers, ready_path="/ready") as server:
        yield server


async def _recognition(base_url: str, world: World) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        response = await client.post(
            "/v1/recognitions",
            json={"recipient_id": world.bob.id, "message": "steady"},
            headers=world.alice.headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sigterm_under_load_drains_and_no_in_flight_request_fails(
    database_url: str, tmp_path: Path
) -> None:
    world = await seed_database(database_url)
    with keel_serve(
        database_url,
        tmp_path,
        KEEL_SHUTDOWN_DRAIN_SECONDS="1.5",
        KEEL_SHUTDOWN_GRACE_SECONDS="15",
        # the shipped settle, which keel_env shortens for tests not about stopping
        KEEL_SERVE_LISTENER_SETTLE_SECONDS=str(Settings().serve_listener_settle_seconds),
        KEEL_HEALTH_CACHE_SECONDS="0",
    ) as server:
        recognition_id = await _recognition(server.url, world)
        outcomes: list[str] = []
        after_sigterm: list[int] = []
        probes: dict[str, list[int]] = {"ready": [], "live": []}
        stop = asyncio.Event()
        sigterm_sent: list[float] = []

        async def load(client: httpx.AsyncClient) -> None:
            deadline = time.monotonic() + 40
            for _ in range(5000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    response = await client.get(
                        f"/v1/recognitions/{recognition_id}", headers=world.bob.headers
                    )
                    outcomes.append(str(response.status_code))
                    if sigterm_sent:
                        after_sigterm.append(response.status_code)
                except httpx.HTTPError as error:
                    outcomes.append(f"{type(error).__name__}: {error}")

        async def balancer() -> None:
            """A load balancer's health check: stop routing once /ready says 503."""
            await asyncio.sleep(1.0)
            server.terminate()
            sigterm_sent.append(time.monotonic())
            async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as probe:
                for _ in range(200):
                    ready = await probe.get("/ready")
                    live = await probe.get("/live")
                    probes["ready"].append(ready.status_code)
                    probes["live"].append(live.status_code)
                    if ready.status_code == 503:
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the balancer's reaction time; requests keep coming
            stop.set()

        async with httpx.AsyncClient(base_url=server.url, timeout=20.0) as client:
            await asyncio.gather(*(load(client) for _ in range(4)), balancer())
        exit_code = await asyncio.to_thread(server.wait, 60.0)
        log = server.log()

    failures = [outcome for outcome in outcomes if outcome != "200"]
    assert not failures, f"{len(failures)} failed of {len(outcomes)}: {failures[:5]}\n{log[-3000:]}"
    assert after_sigterm, "no request was served after SIGTERM"
    assert probes["ready"][-1] == 503
    assert set(probes["live"]) == {200}
    assert exit_code == 0, log[-3000:]
    assert '"event": "shutdown_draining"' in log


def _route_counts(directory: Path) -> dict[str, float]:
    """Requests to ROUTE counted in each worker's histogram file, by file name."""
    counts: dict[str, float] = {}
    for path in sorted(directory.glob("histogram_*.db")):
        total = 0.0
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if (
                    sample.name == "http_server_request_duration_seconds_count"
                    and sample.labels.get("http_route") == ROUTE
                ):
                    total += sample.value
        counts[path.name] = total
    return counts


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_two_workers_serve_and_metrics_count_each_request_once(
    database_url: str, tmp_path: Path
) -> None:
    world = await seed_database(database_url)
    metrics_dir = tmp_path / "metrics"
    with keel_serve(
        database_url,
        tmp_path,
        workers=2,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        KEEL_SHUTDOWN_DRAIN_SECONDS="0",
    ) as server:
        recognition_id = await _recognition(server.url, world)
        sent = 0
        deadline = time.monotonic() + 60
        # New connections each round so the kernel hands them to both workers.
        while sent < 400 and time.monotonic() < deadline:
            async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
                responses = await asyncio.gather(
                    *(
                        client.get(f"/v1/recognitions/{recognition_id}", headers=world.bob.headers)
                        for _ in range(8)
                    )
                )
            assert all(response.status_code == 200 for response in responses)
            sent += len(responses)
            counts = _route_counts(metrics_dir)
            if sent >= 40 and sum(1 for value in counts.values() if value > 0) >= 2:
                break
        per_worker = _route_counts(metrics_dir)
        scraped = httpx.get(server.url + "/metrics", timeout=10.0)
        server.terminate()
        exit_code = await asyncio.to_thread(server.wait, 60.0)

    assert sum(1 for value in per_worker.values() if value > 0) >= 2, per_worker
    assert sum(per_worker.values()) == sent
    expected = (
        "http_server_request_duration_seconds_count{"
        'http_request_method="GET",http_response_status_code="200",'
        f'http_route="{ROUTE}",slo="true"}} {float(sent)}'
    )
    assert expected in scraped.text, scraped.text[:3000]
    assert scraped.text.count("keel_build_info{") == 1
    assert exit_code == 0
    assert not list(metrics_dir.glob("*.db")), "keel serve left its metrics files behind"

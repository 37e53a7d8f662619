"""Synthetic checks against a real ``keel serve``: the CLI, the periodic job, the marking.

One server for the module (SQLite, so its embedded worker runs the periodic check
against the server's own URL from the first tick). Its synthetic requests must
reach neither the request histogram nor the SLO rollups, which after the
shutdown drain hold exactly the requests the histogram's SLO selector counted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.db.engine import Database
from keel.db.tables_slo import SLORollup
from tests.support.app import World, seeded_world
from tests.support.databases import Templates, fresh_database
from tests.support.processes import KeelServer, free_port, server_env, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(
    templates: Templates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KeelServer, World, str]]:
    workdir = tmp_path_factory.mktemp("synthetic")
    with fresh_database(templates, "sqlite", workdir) as url:
        world = seeded_world(url)
        port = free_port()
        env = server_env(
            url,
            workdir,
            {
                "KEEL_SYNTHETIC_TARGET_URL": f"http://127.0.0.1:{port}",
                "KEEL_SYNTHETIC_TOKEN": world.admin.token,
                "KEEL_JOBS_POLL_SECONDS": "0.1",
                "KEEL_SHUTDOWN_DRAIN_SECONDS": "0",
                "KEEL_JOBS_GRACE_SECONDS": "1",
            },
        )
        server = start_server(env, workdir, port=port, ready_path="/ready")
        try:
            yield server, world, url
        finally:
            server.stop()


def _samples(server: KeelServer, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(server.url + "/metrics", timeout=10.0).text
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _synthetic(*args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(cli, ["synthetic", "run", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_a_synthetic_run_passes_every_step_with_an_admin_token(
    served: tuple[KeelServer, World, str],
) -> None:
    server, world, _ = served
    code, run = _synthetic("--target", server.url, "--token", world.admin.token)
    assert code == 0, run
    steps = run["steps"]
    assert isinstance(steps, list)
    assert [(s["step"], s["ok"]) for s in steps] == [
        (step, True) for step in ("health", "create", "replay", "read", "export", "cleanup")
    ]
    assert all(s["seconds"] > 0 for s in steps)


def test_a_failing_check_exits_non_zero_and_says_which_step_failed(
    served: tuple[KeelServer, World, str],
) -> None:
    server, _, _ = served
    code, run = _synthetic("--target", server.url, "--token", "keel_not-a-token")
    assert code == 1
    steps = {s["step"]: s for s in run["steps"]}  # type: ignore[attr-defined]
    assert steps["health"]["ok"]
    assert not steps["create"]["ok"]
    assert "401" in steps["create"]["detail"]
    assert steps["read"]["detail"] == "skipped: the create step failed"
    unreachable, _ = _synthetic("--target", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert unreachable == 1


def test_the_periodic_check_runs_against_the_services_own_url(
    served: tuple[KeelServer, World, str],
) -> None:
    server, _, _ = served
    passed = (("outcome", "success"), ("step", "cleanup"))
    deadline = time.monotonic() + 20
    while _samples(server, "keel_synthetic_checks_total").get(passed, 0) < 1:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.3)
    assert "synthetic_check_passed" in server.log()


async def _rollup_totals(url: str) -> dict[str, int]:
    database = Database(url)
    try:
        async with database.read() as session:
            query = select(SLORollup.slo_name, func.sum(SLORollup.total)).group_by(
                SLORollup.slo_name
            )
            return {name: int(total) for name, total in (await session.execute(query)).all()}
    finally:
        await database.dispose()


def test_synthetic_requests_reach_neither_the_histogram_nor_the_rollups(
    served: tuple[KeelServer, World, str],
) -> None:
    server, world, url = served
    httpx.get(server.url + "/v1/users/me", headers=world.alice.headers, timeout=10.0)
    synthetic = _samples(server, "keel_synthetic_requests_total")
    assert synthetic[(("http_request_method", "POST"), ("http_route", "/v1/recognitions"))] >= 2
    counted = _samples(server, "http_server_request_duration_seconds_count")
    api = sum(
        value
        for labels, value in counted.items()
        if dict(labels)["slo"] == "true" and dict(labels)["http_route"].startswith("/v1/")
    )
    # Only the member's request counts (the bad token's 401s come before routing: unmatched).
    assert api == 1
    server.stop()  # the shutdown drain flushes the rollups
    totals = asyncio.run(_rollup_totals(url))
    assert totals == {"api-availability": 1, "api-latency": 1}

"""The rollups in the database: counted by the app's requests, flushed, shared, pruned.

Every test runs on SQLite and PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from tests.support.app import make_settings, running, seed_world
from typer.testing import CliRunner

from keel.app import create_app
from keel.cli import app as cli
from keel.db.engine import Database
from keel.db.tables_slo import SLORollup
from keel.observe.metrics import request_histogram
from keel.slo import load_objectives
from keel.slo.report import read_reports
from keel.slo.rollup import (
    RollupCounter,
    RollupFlusher,
    RollupMetrics,
    add_counts,
    minute_of,
    prune,
    retention,
)
from keel.testing import ManualClock

OBJECTIVES = load_objectives(None, request_histogram(0.3))
NOW = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)
MINUTE = NOW.replace(second=0)


async def _rows(database: Database) -> dict[str, tuple[int, int]]:
    async with database.read() as session:
        found = (await session.execute(select(SLORollup))).scalars().all()
    return {row.slo_name: (row.total, row.good) for row in found if row.minute == MINUTE}


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_requests_are_counted_once_a_minute_without_probes_or_synthetic_checks(
    database_url: str, database: Database, tmp_path: Path
) -> None:
    settings = make_settings(database_url, str(tmp_path / "blobs"))
    app = create_app(settings, clock=ManualClock(NOW))
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        body = {"recipient_id": world.bob.id, "message": "thanks"}
        synthetic = {"Keel-Synthetic": "1"}
        assert (
            await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
        ).status_code == 201
        # A member cannot mark a request synthetic: it counts.
        member = {**world.alice.headers, **synthetic}
        assert (await client.post("/v1/recognitions", json=body, headers=member)).status_code == 201
        # An admin can: it is neither on the histogram nor in the rollups.
        admin = {**world.admin.headers, **synthetic}
        assert (await client.post("/v1/recognitions", json=body, headers=admin)).status_code == 201
        assert (await client.get("/v1/recognitions/nope", headers=admin)).status_code == 404
        await client.get("/ready")
        metrics = (await client.get("/metrics")).text
        assert "keel_synthetic_requests_total" in metrics
        histogram = 'http_server_request_duration_seconds_count{http_request_method="POST"'
        posted = [line for line in metrics.splitlines() if line.startswith(histogram)]
        assert [line.rsplit(" ", 1)[1] for line in posted] == ["2.0"]
        synthetic_posts = (
            'keel_synthetic_requests_total{http_request_method="POST",'
            'http_route="/v1/recognitions"} 1.0'
        )
        assert synthetic_posts in metrics
        flusher = app.state.services.observe.rollups
        assert flusher is not None
        assert await flusher.flush() == 2  # one row per SLO for this minute
        # Good latency is what the histogram puts in the threshold's bucket, exactly.
        bucket = 'http_server_request_duration_seconds_bucket{http_request_method="POST"'
        fast = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(bucket) and 'le="0.3"' in line
        )
        assert await _rows(database) == {"api-availability": (2, 2), "api-latency": (2, fast)}
        # The shutdown drain flushes what came after the last flush.
        await client.get("/v1/recognitions", headers=world.bob.headers)
    rows = await _rows(database)
    assert rows["api-availability"] == (3, 3)
    assert rows["api-latency"][0] == 3


async def test_processes_add_to_one_row_and_a_failed_flush_keeps_its_counts(
    database: Database,
) -> None:
    now = MINUTE.timestamp() + 5
    registry = CollectorRegistry()
    metrics = RollupMetrics(registry)
    first, second = RollupCounter(OBJECTIVES, metrics), RollupCounter(OBJECTIVES, metrics)
    for counter, status in ((first, 200), (first, 503), (second, 200)):
        counter.record("GET", "/v1/users/me", status, False, 0.5, now)
    unreachable = Database("postgresql+asyncpg://postgres@127.0.0.1:9/none", timeout=0.5)
    try:
        stuck = RollupFlusher(unreachable, first)
        assert await stuck.flush() == 0
        assert first.pending == 2  # kept for the next flush
    finally:
        await unreachable.dispose()
    assert _sample(registry, "keel_slo_rollup_flushes_total", {"outcome": "failure"}) == 1
    assert await RollupFlusher(database, first).flush() == 2
    assert await RollupFlusher(database, second).flush() == 2
    assert await _rows(database) == {"api-availability": (3, 2), "api-latency": (3, 0)}

    reports = await read_reports(database, OBJECTIVES, MINUTE + timedelta(minutes=1))
    five = {report.objective.name: report.windows[0] for report in reports}
    assert (five["api-availability"].total, five["api-availability"].good) == (3, 2)
    assert five["api-latency"].error_ratio == 1.0


async def test_rollups_older_than_the_longest_period_and_a_day_are_pruned(
    database: Database,
) -> None:
    kept = retention(OBJECTIVES)
    assert kept == timedelta(days=31)
    minute = minute_of(MINUTE.timestamp())
    old, young = minute - int(kept.total_seconds() // 60) - 1, minute - 60
    await add_counts(database, {("api-latency", old): (5, 5), ("api-latency", young): (7, 6)})
    assert await prune(database, MINUTE - kept) == 1
    async with database.read() as session:
        left = (await session.execute(select(SLORollup.total))).scalars().all()
    assert left == [7]


async def _add(url: str, counts: dict[tuple[str, int], tuple[int, int]]) -> None:
    database = Database(url)
    try:
        await add_counts(database, counts)
    finally:
        await database.dispose()


def test_keel_slo_report_prints_budgets_burn_rates_and_alerts(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    minute = minute_of(datetime.now(UTC).timestamp()) - 2
    counts = {("api-availability", minute): (1000, 980), ("api-latency", minute): (1000, 1000)}
    asyncio.run(_add(database_url, counts))
    monkeypatch.setenv("KEEL_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")
    printed = CliRunner().invoke(cli, ["slo", "report", "--json"])
    assert printed.exit_code == 0, printed.output
    reports = {r["slo"]: r for r in json.loads(printed.stdout)["slos"]}
    availability = reports["api-availability"]
    assert [w["window"] for w in availability["windows"]] == ["5m", "30m", "1h", "6h", "3d", "30d"]
    five = availability["windows"][0]
    assert (five["total"], five["good"], five["error_ratio"]) == (1000, 980, 0.02)
    assert round(five["burn_rate"], 6) == 40.0
    assert round(availability["budget_remaining"], 6) == -39.0  # 20 bad of 0.5 allowed
    assert {a["alert"]: a["firing"] for a in availability["alerts"]} == {
        "KeelApiAvailabilityFastBurn": True,
        "KeelApiAvailabilitySlowBurn": True,
        "KeelApiAvailabilityBudgetBurn": True,
    }
    assert reports["api-latency"]["budget_remaining"] == 1.0
    table = CliRunner().invoke(cli, ["slo", "report"])
    assert table.exit_code == 0, table.output
    assert "api-availability" in table.output
    assert "FIRING" in table.output
    assert "40.00x" in table.output

"""``/ops/state``: the operator console's snapshot, for the operator token only.

Each section is checked against the owner's own record of the same fact (a dead
job in the queue, a breach row, a noisy flag, an active deployment, a breaker the
operator forced open); a section that cannot be read is listed in ``errors``
while the others still answer.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from tests.support.app import World, app_for, make_settings, running

from keel.console.access import new_token
from keel.console.state import SECTIONS
from keel.db.tables_limits import NoisyFlag, RateLimitBreach
from keel.deploy.release import Release
from keel.deploy.store import DeploymentStore, Strategy
from keel.jobs import enqueue
from keel.observe.metrics import request_histogram
from keel.settings import Settings
from keel.slo import load_objectives
from keel.slo.report import read_reports
from keel.slo.rollup import add_counts, minute_of

TOKEN, TOKEN_SHA256 = new_token()
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, str(tmp_path / "blobs"), ops_token_sha256=TOKEN_SHA256)


async def test_the_state_answers_only_to_the_operator_token(
    client: httpx.AsyncClient, world: World
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        world.admin.headers,
        {"Authorization": TOKEN},
    ):
        refused = await client.get("/ops/state", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    answered = await client.get("/ops/state", headers=OPERATOR)
    assert answered.status_code == 200
    assert answered.headers["cache-control"] == "no-store"


async def test_with_no_token_configured_the_console_is_closed(
    database_url: str, tmp_path: Path
) -> None:

    app = app_for(make_settings(database_url, str(tmp_path / "blobs")))
    async with running(app) as client:
        assert (await client.get("/ops/state", headers=OPERATOR)).status_code == 401
        page = await client.get("/ops")  # the page holds no data: it is served
        assert page.status_code == 200


async def test_each_section_reports_what_its_owner_recorded(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    services = app.state.services
    database = services.database
    now = services.clock.now()
    dead_id = await enqueue(database, "jobs.purge_finished", {}, queue="default")
    await enqueue(database, "jobs.purge_finished", {}, queue="default")
    async with database.write() as session:
        await session.execute(
            text("UPDATE jobs SET state = 'dead' WHERE id = :id"), {"id": dead_id}
        )
        for _ in range(3):
            session.add(
                RateLimitBreach(
                    occurred_at=now - timedelta(minutes=5),
                    limit_name="writes-per-org",
                    key_kind="org",
                    org_id=world.admin.org_id,
                )
            )
        session.add(
            RateLimitBreach(
                occurred_at=now - timedelta(hours=2),
                limit_name="old",
                key_kind="org",
                org_id=world.admin.org_id,
            )
        )
        session.add(
            NoisyFlag(
                org_id=world.admin.org_id,
                reason="request_share",
                value=0.9,
                threshold=0.5,
                flagged_at=now,
            )
        )
    deployment = await DeploymentStore(database, services.audit).create(
        Release("9.9.9", "a" * 40, "0014"),
        environment="staging",
        strategy=Strategy.CANARY,
        created_by="ops-alice",
        required_approvals=1,
    )
    await services.dependencies.registry.force_open("storage")
    last_minute = minute_of(now.timestamp()) - 1
    await add_counts(database, {("api-availability", last_minute): [1000, 998]})

    state = (await client.get("/ops/state", headers=OPERATOR)).json()
    objectives = load_objectives(None, request_histogram(0.3))
    report = await read_reports(database, objectives, services.clock.now())

    assert state["errors"] == {}
    slos = {slo["slo"]: slo for slo in state["slos"]}
    assert slos["api-availability"] == report[0].as_json()
    assert slos["api-availability"]["windows"][0]["total"] == 1000
    assert slos["api-availability"]["windows"][0]["burn_rate"] == pytest.approx(4.0)
    assert state["readiness"]["status"] in {"pass", "warn", "fail"}
    assert {c["name"] for c in state["readiness"]["checks"]} >= {"database"}
    default = next(q for q in state["jobs"]["queues"] if q["queue"] == "default")
    assert default["depth"]["dead"] == 1
    assert default["depth"]["ready"] == 1
    assert state["jobs"]["dead"] == 1
    assert state["breaches"] == [
        {
            "limit": "writes-per-org",
            "org_id": world.admin.org_id,
            "breaches": 3,
            "last_at": state["breaches"][0]["last_at"],
        }
    ]
    assert [(f["org_id"], f["reason"]) for f in state["noisy"]] == [
        (world.admin.org_id, "request_share")
    ]
    assert [d["id"] for d in state["deployments"]] == [deployment.id]
    assert state["deployments"][0]["version"] == "9.9.9"
    storage = next(b for b in state["breakers"] if b["name"] == "storage")
    assert storage["state"] == "forced_open"


async def test_a_section_that_fails_is_listed_and_the_others_still_answer(
    client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(_: object) -> object:
        raise RuntimeError("store unreachable")

    monkeypatch.setitem(SECTIONS, "breaches", broken)
    answer = await client.get("/ops/state", headers=OPERATOR)
    assert answer.status_code == 200
    state = answer.json()
    assert state["errors"] == {"breaches": "RuntimeError: store unreachable"}
    assert state["breaches"] is None
    assert state["readiness"]["checks"]


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    for path, media in (
        ("/ops", "text/html"),
        ("/ops/ops.js", "text/javascript"),
        ("/ops/ops.css", "text/css"),
    ):
        answer = await client.get(path)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(media)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/ops/ops.js"' in (await client.get("/ops")).text

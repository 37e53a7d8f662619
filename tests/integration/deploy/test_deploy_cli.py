"""``keel deploy …`` end to end on a real database, through the CLI's JSON output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.support.services import need_binary
from tests.support.versions import SteadyClient, VersionServer, behind_haproxy
from typer.testing import CliRunner

from keel.cli import app
from keel.db.engine import Database
from keel.deploy.fronts import Front, this_host
from keel.deploy.groups import VersionGroup
from keel.deploy.local import DeploymentRecord, LiveRecord, Step, write_record
from keel.deploy.processes import ServeProcess, Source, SourceKind
from keel.deploy.records import DatabaseRecords
from keel.migrations import head_revision

runner = CliRunner()
NO_CHECKS = ("--by", "alice", "--no-migration-checks")


def _keel(database_url: str, *args: str, code: int = 0, **env: str) -> Any:
    result = runner.invoke(
        app, list(args), env={"KEEL_DATABASE_URL": database_url, "KEEL_GIT_SHA": "c" * 40, **env}
    )
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if "--json" in args and code == 0 else result


def test_create_approve_status_show_and_rollback_through_the_cli(database_url: str) -> None:
    gates = {"KEEL_DEPLOY_APPROVALS": "prod=1"}
    created = _keel(
        database_url, "deploy", "create", "--env", "prod", "--by", "alice", "--json", **gates
    )
    assert created["state"] == "awaiting_approval"
    assert (created["git_sha"], created["migration_head"]) == ("c" * 40, head_revision())
    assert [(c["name"], c["ok"]) for c in created["checks"]] == [
        ("schema-servable", True),
        ("expand-before-traffic", True),
        ("migrations-rehearsed", True),
    ]
    deployment_id = created["id"]

    refused = _keel(database_url, "deploy", "create", "--env", "prod", "--by", "bob", code=1)
    assert "already has deployment" in refused.output
    self_approval = _keel(database_url, "deploy", "approve", deployment_id, "--by", "alice", code=1)
    assert "cannot approve" in self_approval.output

    approved = _keel(
        database_url, "deploy", "approve", deployment_id, "--by", "bob", "--json", **gates
    )
    assert (approved["state"], approved["approvals"]) == ("rolling", ["bob"])
    status = _keel(database_url, "deploy", "status", "--env", "prod", "--json")
    assert [item["id"] for item in status["items"]] == [deployment_id]

    # --watch gives up after its timeout with exit status 2 while the rollout is still active.
    watched = _keel(database_url, "deploy", "status", "--watch", "--timeout", "0", code=2)
    assert "still active" in watched.output

    rolled = _keel(
        database_url,
        "deploy",
        "rollback",
        deployment_id,
        "--by",
        "carol",
        "--reason",
        "p99",
        "--json",
    )
    assert (rolled["state"], rolled["reason"]) == ("rolled_back", "p99")
    shown = _keel(database_url, "deploy", "show", deployment_id, "--json")
    assert [step["to_state"] for step in shown["history"]] == [
        "created", "pre_checks", "awaiting_approval", "rolling", "rolled_back",
    ]  # fmt: skip
    listed = _keel(database_url, "deploy", "list", "--json")
    assert [item["state"] for item in listed["items"]] == ["rolled_back"]
    # Nothing active: --watch returns at once.
    assert "no active deployment" in _keel(database_url, "deploy", "status", "--watch").output


def test_an_environment_without_a_gate_rolls_and_is_promoted(database_url: str) -> None:
    created = _keel(database_url, "deploy", "create", "--env", "dev", "--by", "alice", "--json")
    assert created["state"] == "rolling"
    promoted = _keel(database_url, "deploy", "promote", created["id"], "--by", "alice", "--json")
    assert promoted["state"] == "promoted"
    again = _keel(database_url, "deploy", "rollback", created["id"], code=1)
    assert "cannot move" in again.output


def test_canary_and_proxy_refuse_bad_arguments_and_a_deployment_that_is_not_rolling(
    database_url: str, tmp_path: Path
) -> None:
    created = _keel(database_url, "deploy", "create", "--env", "prod", "--by", "alice", "--json")
    common = [
        "--haproxy-socket", str(tmp_path / "none.sock"),
        "--canary-metrics", "http://127.0.0.1:9/metrics",
        "--baseline-metrics", "http://127.0.0.1:9/metrics",
    ]  # fmt: skip
    uneven = _keel(
        database_url, "deploy", "canary", created["id"], *common, "--steps", "5,50", code=1
    )
    assert "end at 100" in uneven.output
    waiting = _keel(database_url, "deploy", "canary", created["id"], *common, code=1)
    assert "not rolling" in " ".join(waiting.output.split())  # Rich wraps lines
    other = _keel(
        database_url, "deploy", "create", "--env", "dev", "--strategy", "blue-green", "--json"
    )
    wrong = _keel(database_url, "deploy", "canary", other["id"], *common, code=1)
    assert "not canary" in " ".join(wrong.output.split())
    # The new version never answers /ready: rolled back; HAProxy unreachable is said plainly.
    unready = _keel(
        database_url, "deploy", "switch", other["id"], "--haproxy-socket", str(tmp_path / "x"),
        "--ready-url", "http://127.0.0.1:9/ready", "--ready-timeout", "0.2", "--interval", "0.1",
        code=1,
    )  # fmt: skip
    assert "admin socket" in " ".join(unready.output.split())
    bad = _keel(
        database_url, "deploy", "proxy", "--port", "1", "--baseline", "nowhere",
        "--canary", "127.0.0.1:2", "--workdir", str(tmp_path), code=2,
    )  # fmt: skip
    assert "HOST:PORT" in bad.output


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite"])  # the store's backend does not matter here
def test_keel_deploy_canary_promotes_a_healthy_canary_behind_real_haproxy(
    database_url: str,
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    created = _keel(database_url, "deploy", "create", "--env", "dev", "--by", "alice", "--json")
    with (
        VersionServer("canary") as canary,
        VersionServer("baseline") as baseline,
        behind_haproxy(baseline, canary) as proxy,
        SteadyClient(proxy.bind[1]) as client,
    ):
        client.wait_for(20)
        promoted = _keel(
            database_url, "deploy", "canary", created["id"],
            "--haproxy-socket", str(proxy.admin_socket),
            "--canary-metrics", f"http://127.0.0.1:{canary.port}/metrics",
            "--baseline-metrics", f"http://127.0.0.1:{baseline.port}/metrics",
            "--interval", "0.5", "--min-requests", "20", "--json",
            # identical versions on a busy machine: ask for overwhelming evidence of slowness
            "--latency-alpha", "0.0001", "--min-effect", "0.2",
        )  # fmt: skip
        assert set(client.wait_for(30)) == {"canary"}
    assert promoted["state"] == "promoted"
    assert client.failures == []


def test_a_failing_smoke_test_fails_the_deployment_before_any_traffic(database_url: str) -> None:
    failed = _keel(
        database_url, "deploy", "create", "--env", "dev", "--smoke-url", "http://127.0.0.1:9/",
        code=1,
    )  # fmt: skip
    assert "smoke http://127.0.0.1:9/" in failed.output
    (only,) = _keel(database_url, "deploy", "list", "--json")["items"]
    assert only["state"] == "failed"
    assert "pre-check smoke" in only["reason"]


def _in_database(database_url: str, work: Callable[[DatabaseRecords], Awaitable[None]]) -> None:
    async def go() -> None:
        database = Database(database_url)
        try:
            await work(DatabaseRecords(database))
        finally:
            await database.dispose()

    asyncio.run(go())


def _gone_front(environment: str, workdir: Path) -> Front:
    """A front registered earlier whose HAProxy has exited (no process has this pid)."""
    return Front(
        environment=environment,
        host_name=this_host(),
        workdir=workdir,
        admin_socket=workdir / "admin.sock",
        config_path=workdir / "haproxy.cfg",
        bind_host="127.0.0.1",
        bind_port=8000,
        pid=2**22 + 1,
        start_mark="5da2dbb6-fd7c-49c3-99c2-9c83ef518237/1200",
        started_at=datetime(2026, 12, 3, tzinfo=UTC),
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # only the CLI's view is new
def test_status_and_its_watch_show_each_local_deployments_step_and_the_fronts(
    database_url: str, tmp_path: Path
) -> None:
    staged, old = (
        _keel(database_url, "deploy", "create", "--env", environment, "--json", *NO_CHECKS)
        for environment in ("staging", "dev")
    )
    assert (staged["state"], old["state"]) == ("rolling", "rolling")
    group = VersionGroup("blue", Source(SourceKind.CHECKOUT, tmp_path), (ServeProcess(1, 1),))
    other = VersionGroup("green", Source(SourceKind.CHECKOUT, tmp_path), (ServeProcess(2, 2),))
    step = Step(25, "inconclusive", 12, 40, ("canary served 12 requests, fewer than 20",), 3)
    front = _gone_front("staging", tmp_path)

    async def record(records: DatabaseRecords) -> None:
        await records.write_live("staging", LiveRecord(front.admin_socket, group, front.pid, front))
        await records.write_record(
            DeploymentRecord(staged["id"], front.admin_socket, group, other, step)
        )

    _in_database(database_url, record)
    # A deployment run from a directory made before the records moved into the database.
    write_record(
        tmp_path,
        DeploymentRecord(old["id"], tmp_path / "admin.sock", group, other, Step(50, "pass")),
    )
    env = {"COLUMNS": "200"}
    status = _keel(database_url, "deploy", "status", **env)
    watched = _keel(
        database_url, "deploy", "status", "--watch", "--timeout", "0", code=2, **env
    )  # fmt: skip
    for output in (status.output, watched.output):
        assert "25 %" in output
        assert "inconclusive" in output
        assert "12/40" in output
        assert "fewer than 20" in output
        assert "50 %" not in output  # only with --workdir
        assert "haproxy gone" in " ".join(output.split())  # the front, reported not crashed
    with_files = _keel(database_url, "deploy", "status", "--workdir", str(tmp_path), **env)
    assert "50 %" in with_files.output
    assert "25 %" in with_files.output
    listed = _keel(database_url, "deploy", "status", "--json")
    (shown,) = listed["fronts"]
    assert (shown["environment"], shown["state"], shown["live_group"]) == (
        "staging", "haproxy gone", "blue",
    )  # fmt: skip
    assert _keel(database_url, "deploy", "status", "--env", "dev", "--json")["fronts"] == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # only the CLI's decision is new
def test_run_needs_the_environments_front_serving_on_this_machine(
    database_url: str, tmp_path: Path
) -> None:
    created = _keel(database_url, "deploy", "create", "--env", "staging", "--json", *NO_CHECKS)
    run = ["deploy", "run", created["id"], "--server-port", "1"]
    missing = _keel(database_url, *run, code=1)
    assert "staging has no front" in " ".join(missing.output.split())
    front = _gone_front("staging", tmp_path)
    group = VersionGroup("g0", Source(SourceKind.CHECKOUT, tmp_path), (ServeProcess(1, 1),))

    async def register(records: DatabaseRecords) -> None:
        await records.write_live("staging", LiveRecord(front.admin_socket, group, front.pid, front))

    _in_database(database_url, register)
    gone = " ".join(_keel(database_url, *run, code=1).output.split())
    assert "not serving (haproxy gone)" in gone
    assert "keel deploy front --env staging" in gone

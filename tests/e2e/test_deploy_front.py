"""``keel deploy front`` and ``keel deploy run`` with a real HAProxy and ``keel serve``: the front
is registered for its environment in the database, so ``run`` finds it by the deployment's
environment alone — no working directory — and the front follows the promoted group; a second
front for the environment is refused while the first serves, and once its HAProxy is gone
``keel deploy status`` says so."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.db.engine import Database
from keel.deploy.fronts import stop_front
from keel.deploy.groups import VersionGroup, stop_group
from keel.deploy.local import LiveRecord
from keel.deploy.records import DatabaseRecords
from tests.support.policies import generous_policy
from tests.support.processes import free_port, server_env
from tests.support.services import need_binary

pytestmark = pytest.mark.e2e


@pytest.fixture
def backend() -> str:
    """One backend: the registry's SQL is checked on both by the integration tests."""
    return "sqlite"


def _fronts(env: dict[str, str]) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["deploy", "status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout)["fronts"])


def _keel(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _recorded_groups(env: dict[str, str], deployment_ids: list[str]) -> list[VersionGroup]:
    """Every group these deployments recorded in the database (to stop them, whatever
    happened)."""

    async def read() -> list[VersionGroup]:
        database = Database(env["KEEL_DATABASE_URL"])
        try:
            records = DatabaseRecords(database)
            found = [await records.read_record(item) for item in deployment_ids]
            return [group for record in found if record for group in record.groups().values()]
        finally:
            await database.dispose()

    return asyncio.run(read())


def test_a_registered_front_is_found_by_its_environment_and_reported_gone_once_stopped(
    database_url: str, tmp_path: Path
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    env = server_env(
        database_url,
        tmp_path,
        {"KEEL_RATELIMIT_POLICY": str(generous_policy(tmp_path)), "KEEL_INPROCESS_WORKER": "off"},
    )
    port = free_port()
    front = [
        "deploy", "front", "--env", "staging", "--port", str(port),
        "--server-port", str(free_port()), "--workdir", str(tmp_path / "run"), "--json",
    ]  # fmt: skip
    started = CliRunner().invoke(app, front, env=env)
    assert started.exit_code == 0, started.output
    live = LiveRecord.from_dict(json.loads(started.stdout))
    assert live.front is not None
    deployment_ids: list[str] = []
    try:
        (shown,) = _fronts(env)
        assert (shown["environment"], shown["state"], shown["live_group"]) == (
            "staging", "serving", "g0",
        )  # fmt: skip
        assert (shown["bind_port"], shown["pid"]) == (port, live.front.pid)
        answer = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
        assert (answer.status_code, answer.headers["X-Keel-Server"]) == (200, "g0-0")
        again = CliRunner().invoke(app, front, env=env)
        assert again.exit_code == 1
        assert "staging already has a front" in " ".join(again.output.split())

        created = _keel(env, "deploy", "create", "--env", "staging", "--strategy", "blue-green",
                        "--no-migration-checks", "--json")  # fmt: skip
        deployment_ids.append(created["id"])
        new_group = f"g{created['id'][-8:].lower()}"
        promoted = _keel(
            env, "deploy", "run", created["id"], "--server-port", str(free_port()),
            "--warm", "0", "--json",
        )  # fmt: skip
        assert promoted["state"] == "promoted", promoted["reason"]
        (shown,) = _fronts(env)
        assert shown["live_group"] == new_group
        answer = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
        assert answer.headers["X-Keel-Server"] == f"{new_group}-0"
        assert not (live.front.workdir / "deployments").exists()  # the record is in the database
    finally:
        stop_front(live.front)
        for group in [live.group, *_recorded_groups(env, deployment_ids)]:
            stop_group(group, wait_seconds=10)
    (gone,) = _fronts(env)
    assert gone["state"] == "haproxy gone"

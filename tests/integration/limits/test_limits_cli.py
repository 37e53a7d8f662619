"""``keel limits``: overrides take effect in a running app; breaches and noisy flags are listed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.support.app import SECRET, app_for, make_settings, running, seed_world
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.db.engine import Database
from keel.db.tables_limits import NoisyFlag
from keel.domain.orgs import create_org
from keel.guard.breaches import Breach, BreachRecorder
from keel.keyed_hash import keyed_hash
from keel.observe.identity import LOG_HASH_LENGTH, identity_key


@pytest.fixture
def env(database_url: str, policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_DATABASE_URL", database_url)
    monkeypatch.setenv("KEEL_SECRET_KEY", SECRET)
    monkeypatch.setenv("KEEL_RATELIMIT_POLICY", str(policy_file))


def invoke(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


async def test_set_override_changes_a_running_apps_limit(
    env: None, database_url: str, tmp_path: Path, policy_file: Path
) -> None:
    settings = make_settings(database_url, str(tmp_path / "blobs"), ratelimit_policy=policy_file)
    app = app_for(settings)
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        await asyncio.to_thread(
            invoke, "limits", "set-override", world.alice.org_id, "recognitions-daily", "2"
        )
        await app.state.services.limits.guard.overrides.reload()  # what the 15 s refresh does
        body = {"recipient_id": world.bob.id, "message": "hi"}
        statuses = [
            (
                await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [201, 201, 429]
        listed = await asyncio.to_thread(invoke, "limits", "overrides")
        assert listed["items"] == {world.alice.org_id: {"recognitions-daily": 2}}
        await asyncio.to_thread(
            invoke, "limits", "clear-override", world.alice.org_id, "recognitions-daily"
        )
        await app.state.services.limits.guard.overrides.reload()
        assert (
            await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
        ).status_code == 201


def test_unknown_limit_names_are_refused(env: None) -> None:
    result = CliRunner().invoke(cli, ["limits", "set-override", "org", "no-such-limit", "5"])
    assert result.exit_code == 1
    assert "unknown limit" in result.stderr


async def test_breaches_lists_top_offenders(env: None, database: Database) -> None:
    recorder = BreachRecorder(database, identity_key(SECRET.encode()))
    now = datetime.now(UTC)
    for _ in range(3):
        recorder.record(Breach(now, "api-user", "user", "org-1", "user-1", "10.0.0.1"))
    recorder.record(Breach(now, "anon-ip", "ip", None, None, "10.0.0.2"))
    assert await recorder.flush() == 4
    report = await asyncio.to_thread(invoke, "limits", "breaches", "--since", "1h")
    items = report["items"]
    assert isinstance(items, list)
    assert items[0]["breaches"] == 3
    assert items[0]["limit"] == "api-user"
    assert "user-1" not in json.dumps(report)  # users and IPs only as keyed hashes
    assert "10.0.0.1" not in json.dumps(report)
    # The breach hash starts with the user's hash in log lines, so the two can be joined.
    log_hash = keyed_hash(identity_key(SECRET.encode()), "user-1", length=LOG_HASH_LENGTH)
    assert str(items[0]["user_hash"]).startswith(log_hash)


async def test_noisy_lists_active_flags(env: None, database: Database) -> None:
    async with database.write() as session:
        session.add(
            NoisyFlag(
                org_id="org-9",
                reason="request_share",
                value=0.9,
                threshold=0.5,
                flagged_at=datetime.now(UTC),
            )
        )
    report = await asyncio.to_thread(invoke, "limits", "noisy")
    assert [item["org_id"] for item in report["items"]] == ["org-9"]  # type: ignore[union-attr]


async def test_overrides_are_audited(env: None, database: Database) -> None:
    async with database.write() as session:
        org_id = (await create_org(session, "Audited")).id
    await asyncio.to_thread(invoke, "limits", "set-override", org_id, "recognitions-daily", "7")
    found = await asyncio.to_thread(
        CliRunner().invoke, cli, ["audit", "search", "--code", "limit.override_set", "--json"]
    )
    assert found.exit_code == 0, found.output
    events = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
    assert [event["fields"]["value"] for event in events] == [7]

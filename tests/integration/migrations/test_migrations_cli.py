"""``keel migrate``'s new commands, through Typer, on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.migration_samples import HEAD, REAL_REVISIONS
from typer.testing import CliRunner

from keel.cli import app
from keel.migrations.script.graph import Scripts


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEEL_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}")
    monkeypatch.setenv("KEEL_MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_apply_then_status_then_rollback_then_restore(sqlite_env: Path) -> None:
    runner = CliRunner()

    applied = runner.invoke(app, ["migrate", "apply", "--json"])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["end_revision"] == HEAD

    status = runner.invoke(app, ["migrate", "status", "--json"])
    assert status.exit_code == 0, status.output
    found = json.loads(status.stdout)
    assert found["at_head"]
    assert found["checksums"][0]["state"] == "ok"

    rolled = runner.invoke(app, ["migrate", "rollback", "--to", "base", "--json"])
    assert rolled.exit_code == 0, rolled.output
    backup = json.loads(rolled.stdout)["backup_file"]
    assert backup

    refused = runner.invoke(app, ["migrate", "restore", backup], input="n\n")
    assert refused.exit_code != 0
    restored = runner.invoke(app, ["migrate", "restore", backup, "--yes", "--json"])
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["end_revision"] == HEAD


def test_no_backup_is_refused_outside_dev(
    sqlite_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ENV", "prod")

    result = CliRunner().invoke(app, ["migrate", "apply", "--no-backup"])

    assert result.exit_code == 1
    assert "only dev may skip it" in result.output
    assert not (sqlite_env / "keel.db").exists()


def test_dry_run_and_plan_on_an_empty_database(sqlite_env: Path) -> None:
    runner = CliRunner()

    planned = runner.invoke(app, ["migrate", "plan", "--json"])
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert [item["revision"] for item in plan["revisions"]] == REAL_REVISIONS
    assert "CREATE TABLE orgs" in plan["revisions"][0]["sql"]

    tried = runner.invoke(app, ["migrate", "dry-run", "--json"])
    assert tried.exit_code == 0, tried.output
    # A dry run is one rolled-back transaction: it stops before the first revision
    # that runs outside one (a concurrent index build) and says so.
    revisions = Scripts().all()
    outside = next((item for item in revisions if not item.transactional), None)
    trial = json.loads(tried.stdout)
    if outside is None:
        assert trial["target_revision"] == HEAD
    else:
        assert trial["target_revision"] == outside.down_revision
        assert any(f"stopped before {outside.revision}" in note for note in trial["notes"])
    current = runner.invoke(app, ["migrate", "current", "--json"])
    assert json.loads(current.stdout)["current"] is None


def test_new_needs_exactly_one_kind(sqlite_env: Path) -> None:
    result = CliRunner().invoke(app, ["migrate", "new", "x", "--expand", "--contract"])
    assert result.exit_code == 1
    assert "exactly one" in result.output


def test_an_unknown_revision_is_a_clear_error(sqlite_env: Path) -> None:
    runner = CliRunner()
    for arguments in (["rollback", "--to", "9999"], ["apply", "--target", "9999"]):
        result = runner.invoke(app, ["migrate", *arguments])
        assert result.exit_code == 1
        assert "no revision '9999'" in result.output


def test_migration_runs_are_recorded_in_the_audit_log(sqlite_env: Path) -> None:
    runner = CliRunner()
    applied = runner.invoke(app, ["migrate", "apply", "--json"])
    assert applied.exit_code == 0, applied.output
    found = runner.invoke(app, ["audit", "search", "--code", "migration.applied", "--json"])
    assert found.exit_code == 0, found.output
    events = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
    assert sorted(e["fields"]["to_revision"] for e in events) == sorted(REAL_REVISIONS)
    assert all(e["fields"]["phase"] == "upgrade" for e in events)
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output

"""``keel migrate`` from empty, and ``keel serve``'s refusal of a schema behind the code."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tests.support.app import SECRET
from tests.support.databases import BACKENDS, empty_database
from typer.testing import CliRunner

from keel.cli import app
from keel.cli.server import prepare_schema
from keel.errors import SchemaBehind
from keel.settings import Settings


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_upgrade_downgrade_and_current_from_empty(
    backend_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with empty_database(backend_name, tmp_path) as url:
        monkeypatch.setenv("KEEL_DATABASE_URL", url)
        runner = CliRunner()
        before = json.loads(runner.invoke(app, ["migrate", "current", "--json"]).stdout)
        assert before["current"] is None
        assert runner.invoke(app, ["migrate", "upgrade"]).exit_code == 0
        after = json.loads(runner.invoke(app, ["migrate", "current", "--json"]).stdout)
        assert after["at_head"] is True
        assert runner.invoke(app, ["migrate", "downgrade", "base"]).exit_code == 0
        gone = json.loads(runner.invoke(app, ["migrate", "current", "--json"]).stdout)
        assert gone["current"] is None


def test_serve_refuses_a_postgres_schema_behind_the_code(tmp_path: Path) -> None:
    with empty_database("postgres", tmp_path) as url:
        settings = Settings(database_url=url, secret_key=SECRET)  # type: ignore[arg-type]
        with pytest.raises(SchemaBehind, match="keel migrate upgrade"):
            asyncio.run(prepare_schema(settings))


def test_serve_migrates_the_embedded_sqlite_default_itself(tmp_path: Path) -> None:
    with empty_database("sqlite", tmp_path) as url:
        settings = Settings(database_url=url, secret_key=SECRET)  # type: ignore[arg-type]
        revision = asyncio.run(prepare_schema(settings))
        assert revision != "nothing"


def test_serve_refuses_a_bad_policy_file_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('version = 1\n\n[[limits]]\nname = "x"\nkey = "planet"\n')
    monkeypatch.setenv("KEEL_RATELIMIT_POLICY", str(policy))
    monkeypatch.setenv("KEEL_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 1
    assert f"{policy}:" in result.stderr
    assert "Traceback" not in result.output

"""Every ``keel`` foundation command, run in-process against SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.app import SECRET
from typer.testing import CliRunner

from keel import __version__
from keel.cli import app


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "KEEL_DATABASE_URL": database_url,
        "KEEL_SECRET_KEY": SECRET,
        "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return env


def keel(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_admin_commands_create_and_list_orgs_users_and_tokens(cli_env: dict[str, str]) -> None:
    org = keel("admin", "create-org", "Acme", "--plan", "team", "--json")
    org_id = str(org["id"])
    user = keel(
        "admin",
        "create-user",
        "--org",
        org_id,
        "--email",
        "Ada@Acme.test",
        "--role",
        "admin",
        "--json",
    )
    token = keel("admin", "create-token", "--user", str(user["id"]), "--json")
    assert str(token["token"]).startswith("keel_")
    orgs = keel("admin", "list-orgs", "--json")["items"]
    assert {"id": org_id, "name": "Acme", "plan": "team", "timezone": "UTC"} in orgs  # type: ignore[operator]
    users = keel("admin", "list-users", "--org", org_id, "--json")["items"]
    assert users == [
        {"id": user["id"], "org_id": org_id, "email": "ada@acme.test", "role": "admin"}
    ]
    revoked = keel("admin", "revoke-token", str(token["id"]), "--json")
    assert revoked == {"id": token["id"], "revoked": True}


def test_text_output_is_human_readable(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["admin", "create-org", "Plain"])
    assert result.exit_code == 0
    assert result.stdout.startswith("organisation ")
    listing = CliRunner().invoke(app, ["admin", "list-orgs"])
    assert "Plain" in listing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["admin", "create-org", "X", "--plan", "platinum"], "plan must be one of"),
        (["admin", "create-org", "X", "--timezone", "Mars/Olympus"], "unknown time zone"),
        (
            [
                "admin",
                "create-user",
                "--org",
                "01a22537-0000-7000-8000-000000000000",
                "--email",
                "a@b.test",
            ],
            "no organisation",
        ),
        (["admin", "create-token", "--user", "01a22537-0000-7000-8000-000000000000"], "no user"),
        (["admin", "revoke-token", "01a22537-0000-7000-8000-000000000000"], "no token"),
    ],
)
def test_bad_input_is_a_one_line_error_and_exit_1(
    cli_env: dict[str, str], args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_duplicate_email_is_refused(cli_env: dict[str, str]) -> None:
    org_id = str(keel("admin", "create-org", "Dup", "--json")["id"])
    keel("admin", "create-user", "--org", org_id, "--email", "same@dup.test", "--json")
    result = CliRunner().invoke(
        app, ["admin", "create-user", "--org", org_id, "--email", "same@dup.test"]
    )
    assert result.exit_code == 1
    assert "already exists" in result.stderr


def test_seed_demo_is_idempotent_and_reprints_the_same_tokens(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    first = keel("admin", "seed-demo", "--json")
    second = keel("admin", "seed-demo", "--json")
    assert first["created"] is True
    assert second["created"] is False
    assert first["org_id"] == second["org_id"]
    assert first["users"] == second["users"]
    assert len(keel("admin", "list-users", "--json")["items"]) == 2  # type: ignore[arg-type]
    tokens_file = tmp_path / "keel-data" / "demo-tokens.json"
    assert oct(tokens_file.stat().st_mode & 0o777) == "0o600"
    text = CliRunner().invoke(app, ["admin", "seed-demo"]).stdout
    assert "curl -sS -X POST http://127.0.0.1:8000/v1/recognitions" in text


def test_migrate_current_reports_head(cli_env: dict[str, str]) -> None:
    state = keel("migrate", "current", "--json")
    assert state["at_head"] is True
    assert state["current"] == state["head"]


def test_version_prints_the_package_version(cli_env: dict[str, str]) -> None:
    assert keel("version", "--json")["version"] == __version__

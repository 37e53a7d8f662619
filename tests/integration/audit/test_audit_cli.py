"""``keel audit`` and the audited ``keel admin`` commands, run through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from typer.testing import CliRunner

from keel.audit.signing import public_pem, write_private_key
from keel.cli import app
from keel.db.engine import Database

runner = CliRunner()


@pytest.fixture
def env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEEL_DATABASE_URL", database_url)
    monkeypatch.setenv("KEEL_SECRET_KEY", "cli-test-secret-that-is-long-enough-0123")
    monkeypatch.setenv("KEEL_STORAGE_DIR", str(tmp_path / "blobs"))
    monkeypatch.setenv("KEEL_AUDIT_DIGEST_EVERY", "1000")
    return tmp_path


def keel(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.stdout


def json_of(*args: str) -> dict[str, object]:
    return json.loads(keel(*args))  # type: ignore[no-any-return]


def lines_of(*args: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in keel(*args).splitlines() if line.strip()]


async def _sql(url: str, statement: str) -> None:
    database = Database(url)
    try:
        async with database.write() as session:
            await session.execute(text(statement))
    finally:
        await database.dispose()


def test_admin_changes_are_audited_and_every_audit_command_works(
    env: Path, database_url: str
) -> None:
    org = str(json_of("admin", "create-org", "Acme", "--json")["id"])
    user = str(
        json_of("admin", "create-user", "--org", org, "--email", "x@acme.test", "--json")["id"]
    )
    token = json_of("admin", "create-token", "--user", user, "--json")
    keel("admin", "revoke-token", str(token["id"]), "--json")
    keel("admin", "set-plan", "--org", org, "--plan", "enterprise", "--json")
    keel("admin", "set-role", "--user", user, "--role", "admin", "--json")

    events = lines_of("audit", "search", "--org", org, "--json")
    assert [e["code"] for e in reversed(events)] == [
        "org.created",
        "user.created",
        "token.created",
        "token.revoked",
        "plan.changed",
        "user.role_changed",
    ]
    assert [e["seq"] for e in reversed(events)] == [1, 2, 3, 4, 5, 6]
    plan = lines_of("audit", "search", "--code", "plan.changed", "--json")
    assert len(plan) == 1
    assert plan[0]["fields"] == {"from_plan": "free", "to_plan": "enterprise", "via": "cli"}
    assert len(lines_of("audit", "search", "--user", user, "--json")) == 4
    assert lines_of("audit", "search", "--since", "2999-01-01", "--json") == []
    assert "plan.changed" in keel("audit", "search", "--org", org)
    keel("audit", "search", "--code", "no.such", code=1)
    keel("audit", "search", "--since", "yesterday", code=1)

    digests = json_of("audit", "digest", "--json")["items"]
    assert [(d["first_seq"], d["last_seq"]) for d in digests] == [(1, 6)]  # type: ignore[index, union-attr]
    assert json_of("audit", "digest", "--org", org, "--json")["items"] == []
    assert keel("audit", "verify").startswith("ok: 1 chain(s), 6 event(s), 1 signed digest(s)")
    assert json_of("audit", "verify", "--org", org, "--json")["ok"] is True

    pem = keel("audit", "public-key")
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert json_of("audit", "public-key", "--json")["pem"] == pem
    (env / "ours.pem").write_text(pem)
    stranger = Ed25519PrivateKey.generate()
    (env / "theirs.pem").write_text(public_pem(stranger.public_key()))
    keel("audit", "verify", "--public-key", str(env / "ours.pem"))
    refused = json.loads(
        keel("audit", "verify", "--public-key", str(env / "theirs.pem"), "--json", code=1)
    )
    assert refused["first_break"]["kind"] == "digest_unknown_key"

    exported = env / "audit.jsonl"
    keel("audit", "export", "--org", org, "-o", str(exported))
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"hash", "prev_hash", "fields", "actor"} <= set(rows[0])
    assert [json.loads(x)["seq"] for x in keel("audit", "export").splitlines()] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]

    asyncio.run(_sql(database_url, "DELETE FROM audit_events WHERE seq = 4"))
    assert "BROKEN" in keel("audit", "verify", code=1)
    broken = json.loads(keel("audit", "verify", "--json", code=1))["first_break"]
    assert (broken["seq"], broken["kind"]) == (4, "sequence_gap")


def test_codes_and_generate_key(env: Path) -> None:
    codes = json_of("audit", "codes", "--json")["items"]
    assert len(codes) >= 15  # type: ignore[arg-type]
    assert "ratelimit.breached" in keel("audit", "codes")
    path = env / "keys" / "signing.pem"
    keel("audit", "generate-key", str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keel("audit", "generate-key", str(path), code=1)
    write_target = env / "other.pem"
    write_private_key(write_target, Ed25519PrivateKey.generate())
    with pytest.raises(FileExistsError):
        write_private_key(write_target, Ed25519PrivateKey.generate())

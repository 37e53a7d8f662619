"""``keel parity`` against real ``keel serve`` processes: drift is listed and fails the command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app as cli
from tests.support.policies import generous_policy
from tests.support.processes import KEEL, keel_env, keel_server, server_env

pytestmark = pytest.mark.e2e


def test_parity_lists_each_difference_of_drifted_servers_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = server_env(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", tmp_path)
    drifted = {
        **server_env(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", tmp_path / "c"),
        "KEEL_RATELIMIT_POLICY": str(generous_policy(tmp_path)),
        "KEEL_SLO_LATENCY_SECONDS": "0.42",  # the shipped latency SLO's 0.3 s is then no edge
        "KEEL_AUTH_CACHE_SECONDS": "9",
        "KEEL_RELEASE_ID": "canary",
    }
    with (
        keel_server(base, tmp_path, ready_path="/version") as a,
        keel_server(drifted, tmp_path, ready_path="/version") as c,
    ):
        same = CliRunner().invoke(cli, ["parity", a.url, a.url])
        assert same.exit_code == 0, same.output
        assert "divergence 0.0 %" in same.output

        drift = subprocess.run(
            [*KEEL, "parity", a.url, c.url, "--json"],
            env=keel_env({}),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert drift.returncode == 1, drift.stdout + drift.stderr
        report = json.loads(drift.stdout)
        assert {d["item"] for d in report["differences"]} == {
            "setting:database_url",
            "setting:storage_dir",
            "setting:ratelimit_policy",
            "limit_policy",
            "setting:slo_latency_seconds",
            "slo_rules",
            "setting:auth_cache_seconds",
            "setting:release_id",
        }
        assert report["divergence_percent"] > 5
        slo = next(d for d in report["differences"] if d["item"] == "slo_rules")
        assert slo["b"] is None  # C's SLO file is refused on C's buckets: C has no rules

        monkeypatch.setenv("COLUMNS", "200")
        table = CliRunner().invoke(cli, ["parity", a.url, c.url, "--threshold", "50"])
        assert table.exit_code == 0, table.output
        assert "setting:auth_cache_seconds" in table.output
        assert "(within the 50 % threshold)" in table.output

"""``keel parity`` against real ``keel serve`` processes: drift is listed and fails the command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app as cli
from tests.support.policies import generous_policy
from tests.support.processes import KeelServer, server_env, start_server

pytestmark = pytest.mark.e2e


@contextmanager
def _both_started(
    env_a: dict[str, str], env_b: dict[str, str], cwd: Path
) -> Iterator[tuple[KeelServer, KeelServer]]:
    """Start both servers at once (their start-ups are most of this test's time)."""
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(start_server, env, cwd, name=name, ready_path="/version")
            for name, env in (("a", env_a), ("b", env_b))
        ]
        servers = []
        for future in futures:
            try:
                server = future.result()
            except AssertionError:
                continue  # the other is stopped below; the failure is raised after
            stack.callback(server.stop)
            servers.append(server)
        for future in futures:
            future.result()
        yield servers[0], servers[1]


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
    with _both_started(base, drifted, tmp_path) as (a, c):
        same = CliRunner().invoke(cli, ["parity", a.url, a.url])
        assert same.exit_code == 0, same.output
        assert "divergence 0.0 %" in same.output

        drift = CliRunner().invoke(cli, ["parity", a.url, c.url, "--json"])
        assert drift.exit_code == 1, drift.output
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

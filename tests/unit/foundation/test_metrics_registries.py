"""Metrics are built by the composition root on the app's own registry, never at import.

Importing every ``keel`` module registers nothing in prometheus_client's process-wide
registry, and two apps built in one process each expose their own families without
colliding (a family registered twice in one registry raises ``Duplicated timeseries``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from tests.support.app import make_settings

from keel.app import create_app

IMPORT_EVERYTHING = """
import importlib, pkgutil
import keel
from prometheus_client import REGISTRY
before = set(REGISTRY._names_to_collectors)
for module in pkgutil.walk_packages(keel.__path__, "keel."):
    if module.name.endswith(("__main__", "migrations.script.env")):
        continue  # the CLI's entry point runs it; alembic's env runs under alembic only
    importlib.import_module(module.name)
print(sorted(set(REGISTRY._names_to_collectors) - before))
"""


def _families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_importing_every_keel_module_registers_no_metric() -> None:
    """In a fresh interpreter: this one has built breakers without a registry of their own."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_two_apps_in_one_process_keep_their_metrics_apart(tmp_path: Path) -> None:
    before = set(REGISTRY._names_to_collectors)
    apps = [
        create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / name}.db", str(tmp_path / name)))
        for name in ("one", "two")
    ]
    one, two = (app.state.services.metrics for app in apps)
    assert one.registry is not two.registry
    assert set(REGISTRY._names_to_collectors) == before

    one.guard.shed.refused.labels("read", "in_flight").inc()
    first, second = (_families(m.exposition.render()[0].decode()) for m in (one, two))
    assert first == second  # the same families, each app's own series
    assert {"keel_shed_requests", "keel_jobs_dead", "http_server_request_duration_seconds"} <= first
    shed = ("keel_shed_requests_total", {"priority": "read", "reason": "in_flight"})
    assert one.registry.get_sample_value(*shed) == 1.0
    assert two.registry.get_sample_value(*shed) == 0.0

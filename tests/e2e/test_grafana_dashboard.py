"""Every query of the Grafana dashboard runs on a real Prometheus scraping a real ``keel serve``.

The SLO rules ``keel slo rules`` writes are loaded into the same Prometheus, as the
README tells operators to. A query that Prometheus refuses (a typo, a many-to-many
match) fails here, and so does a query over the API's families that finds no
series: a panel that would stay empty on a healthy service.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from keel.observe.metrics import request_histogram
from keel.slo import build_rules, load_objectives, write_rules
from keel.slo.dashboard import RATE, queries, rows
from keel.slo.rules import record_name, windows
from tests.support.processes import keel_server, server_env
from tests.support.prometheus import prometheus_server, query, wait_for

pytestmark = pytest.mark.e2e

HISTOGRAM = request_histogram(0.3)
# Panels with nothing to show on a healthy, idle service (no server error has happened).
EMPTY_WHEN_HEALTHY = frozenset({"Server errors (5xx) per second by route"})


def test_every_dashboard_query_runs_and_the_api_panels_have_data(tmp_path: Path) -> None:
    objectives = load_objectives(None, HISTOGRAM)
    rules_path, _ = write_rules(build_rules(None, HISTOGRAM), tmp_path / "rules")
    env = server_env(f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}", tmp_path)
    with keel_server(env, tmp_path, ready_path="/ready") as server:
        host = server.url.removeprefix("http://")
        with prometheus_server(tmp_path, [host], [rules_path]) as prom:
            for _ in range(5):  # core API traffic for the SLIs (401s are not server errors)
                assert httpx.get(f"{server.url}/v1/users/me", timeout=10).status_code == 401
            # Every recording rule of every SLO has been evaluated once (a group's rules are
            # written one after another, so the first one's presence proves nothing of the rest).
            for objective in objectives:
                for window in windows():
                    wait_for(prom, f'{record_name(window)}{{slo_name="{objective.name}"}}')
            board = rows(objectives, HISTOGRAM)
            asked = [
                (panel, query) for row in board for panel in row.panels for query in panel.queries
            ]
            with ThreadPoolExecutor(8) as pool:
                results = list(
                    pool.map(lambda pq: query(prom, pq[1].expr.replace(RATE, "30s")), asked)
                )
    empty = [
        panel.title
        for (panel, query), result in zip(asked, results, strict=True)
        if query.source != "worker" and not result
    ]
    assert set(empty) == EMPTY_WHEN_HEALTHY, empty
    assert len(queries(board)) > 30

"""The generated Grafana dashboard: in step with the SLO file, the rules and the metric contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from keel.cli import app as cli
from keel.observe.metrics import request_histogram
from keel.slo import load_objectives, parse_objectives
from keel.slo.dashboard import DASHBOARD_FILE, dashboard, queries, render_dashboard, rows
from keel.slo.rules import RECORD_PREFIX, render_rules
from keel.slo.spec import default_slo_text
from tests.support.metric_contract import documented_metrics

HISTOGRAM = request_histogram(0.3)
COMMITTED = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / DASHBOARD_FILE
# Names a query may use that are not Keel's families: Prometheus' own alert series.
PROMETHEUS_BUILTINS = frozenset({"ALERTS"})
_FUNCTIONS = frozenset(
    {
        "sum",
        "max",
        "count",
        "rate",
        "increase",
        "topk",
        "histogram_quantile",
        "vector",
        "by",
        "on",
        "group_left",
        "or",
        "and",
    }
)
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _objectives() -> Any:
    return load_objectives(None, HISTOGRAM)


def _metric_names(expr: str) -> set[str]:
    """Identifiers in ``expr`` outside label matchers, label lists and strings."""
    bare = re.sub(r'"[^"]*"', "", expr)  # strings (label values, le edges)
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\b(by|on|group_left)\s*\([^)]*\)", "", bare)  # label lists
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range selectors
    return {n for n in _NAME.findall(bare) if n not in _FUNCTIONS and not n.startswith("$")}


def _family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_the_committed_dashboard_is_what_the_shipped_slo_file_generates() -> None:
    assert COMMITTED.read_text("utf-8") == render_dashboard(_objectives(), HISTOGRAM), (
        "deploy/grafana is stale: run `keel slo dashboard`"
    )


def test_every_query_reads_a_documented_family_or_a_generated_rule() -> None:
    documented = documented_metrics() | documented_metrics("| worker metric | type | labels |")
    recorded = set(
        re.findall(
            rf"record: ({re.escape(RECORD_PREFIX)}\w+)", render_rules(_objectives(), HISTOGRAM)
        )
    )
    used: set[str] = set()
    for query in queries(rows(_objectives(), HISTOGRAM)):
        names = _metric_names(query.expr)
        assert names, query.expr
        for name in names:
            known = {name, _family(name)} & (documented.keys() | recorded | PROMETHEUS_BUILTINS)
            assert known, f"{name!r} in {query.expr!r} is neither documented nor recorded"
        used |= names
    # Every recording rule window appears on the burn-rate panel.
    assert recorded <= used


def test_each_slo_gets_its_budget_burn_rate_and_alert_panels_with_its_own_budget() -> None:
    text = default_slo_text().replace("target: 0.9995", "target: 0.999")
    objectives = parse_objectives(text, HISTOGRAM, source="test")
    board = dashboard(objectives, HISTOGRAM)
    titles = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert titles[:2] == [
        "SLO: Core API availability (target 0.999, 30d)",
        "SLO: Core API latency (target 0.99, 30d)",
    ]
    burn = next(p for p in board["panels"] if p["title"] == "Burn rate by window")
    exprs = [t["expr"] for t in burn["targets"]]
    assert exprs[0] == 'keel_slo:sli_error:ratio_rate5m{slo_name="api-availability"} / 0.001'
    assert [t["legendFormat"] for t in burn["targets"]] == ["5m", "30m", "1h", "6h", "3d"]
    budget = next(p for p in board["panels"] if p["title"] == "Error budget remaining")
    assert "[30d]" in budget["targets"][0]["expr"]
    assert "/ 0.001" in budget["targets"][0]["expr"]


def test_the_layout_is_valid_grafana_json() -> None:
    board = dashboard(_objectives(), HISTOGRAM)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        for target in panel.get("targets", ()):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert json.loads(render_dashboard(_objectives(), HISTOGRAM)) == board


def test_keel_slo_dashboard_writes_the_file_from_a_given_slo_file(tmp_path: Path) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text(default_slo_text().replace("target: 0.99\n", "target: 0.995\n"), "utf-8")
    result = CliRunner().invoke(
        cli, ["slo", "dashboard", "--file", str(slo), "--output-dir", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / DASHBOARD_FILE).read_text("utf-8"))
    assert "SLO: Core API latency (target 0.995, 30d)" in [p["title"] for p in written["panels"]]
    refused = CliRunner().invoke(
        cli,
        [
            "slo",
            "dashboard",
            "--file",
            str(tmp_path / "missing.yaml"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
    )
    assert refused.exit_code != 0
    assert not (tmp_path / "out").exists()

"""A Grafana dashboard for Keel, generated from the SLO file and the metric contract.

Why generated: the error-budget and burn-rate panels must use the same SLOs,
windows and thresholds as the alert rules (``keel slo rules``); a hand-kept JSON
file would drift from them the first time the SLO file changed. The operational
panels (requests, limits, jobs, dependencies, deploys) read only the families the
README's metric tables promise, so a test can hold every query to that contract
and run each against a real Prometheus scraping a real ``keel serve``.

Queries aggregate the way the metrics are meant to be read: queue depth and
oldest-ready age with ``max`` (every process reads the same database, so a sum
would count each job once per process), everything else with ``sum``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from keel.slo.rules import (
    NAME_LABEL,
    WORKBOOK_ALERTS,
    error_ratio_expr,
    number,
    record_name,
    windows,
)
from keel.slo.spec import Objective, RequestHistogram, render_duration

DASHBOARD_FILE = "keel-dashboard.json"
DASHBOARD_UID = "keel-overview"
RATE = "$__rate_interval"
"""Grafana's own step-aware window; tests substitute a duration for it."""

Source = Literal["api", "worker", "rules"]
"""Who makes a query's series: any ``keel serve``, a ``keel worker --autoscale``
supervisor, or Prometheus evaluating the SLO rules. A query over ``api`` series has
data as soon as one API process has been scraped twice."""


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str
    source: Source = "api"


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "stat"] = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 8


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


_HTTP = "http_server_request_duration_seconds"
_SLI = 'slo="true"'


def _slo_row(objective: Objective, histogram: RequestHistogram) -> Row:
    """Budget left over the SLO period, burn rate per window, and its alerts."""
    budget = number(objective.error_budget)
    period = objective.period_seconds
    where = f'{{{NAME_LABEL}="{objective.name}"}}'
    remaining = f"1 - (\n{error_ratio_expr(objective, histogram, period)}) / {budget}"
    burn = tuple(
        Query(f"{record_name(window)}{where} / {budget}", render_duration(window), "rules")
        for window in windows(WORKBOOK_ALERTS)
    )
    alerting = tuple(
        f"{number(alert.burn_rate(period))}× over {render_duration(alert.long_window)}"
        for alert in WORKBOOK_ALERTS
    )
    return Row(
        f"SLO: {objective.display_name} (target {objective.target}, {objective.period})",
        (
            Panel(
                "Error budget remaining",
                (Query(remaining, "remaining"),),
                kind="stat",
                unit="percentunit",
                description=f"Share of the {objective.period} error budget ({budget}) not spent.",
                width=6,
            ),
            Panel(
                "Burn rate by window",
                burn,
                description=(
                    "Error ratio ÷ error budget; 1 spends the budget exactly over the period. "
                    "Alerts page/ticket at " + ", ".join(alerting) + " (with a short window)."
                ),
                width=12,
            ),
            Panel(
                "Alerts firing",
                (
                    Query(
                        f'count(ALERTS{{alertstate="firing",{NAME_LABEL}="{objective.name}"}})'
                        " or vector(0)",
                        "firing",
                        "rules",
                    ),
                ),
                kind="stat",
                width=6,
            ),
        ),
    )


def _rate(metric: str, by: str, selector: str = "") -> str:
    labels = f"{{{selector}}}" if selector else ""
    return f"sum by ({by}) (rate({metric}{labels}[{RATE}]))"


def _quantile(q: str, metric: str, by: str, selector: str = "") -> str:
    labels = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{labels}[{RATE}])))"


OPERATIONS: tuple[Row, ...] = (
    Row(
        "Requests",
        (
            Panel(
                "Requests per second by route",
                (Query(_rate(f"{_HTTP}_count", "http_route", _SLI), "{{http_route}}"),),
                unit="reqps",
            ),
            Panel(
                "Server errors (5xx) per second by route",
                (
                    Query(
                        _rate(
                            f"{_HTTP}_count",
                            "http_route",
                            f'{_SLI},http_response_status_code=~"5.."',
                        ),
                        "{{http_route}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Latency p50 / p99",
                (
                    Query(_quantile("0.5", _HTTP, "le", _SLI), "p50"),
                    Query(_quantile("0.99", _HTTP, "le", _SLI), "p99"),
                ),
                unit="s",
            ),
            Panel(
                "Requests in flight",
                (
                    Query(
                        "sum by (http_request_method) (http_server_active_requests)",
                        "{{http_request_method}}",
                    ),
                ),
            ),
            Panel(
                "Load shed per second",
                (
                    Query(
                        _rate("keel_shed_requests_total", "priority, reason"),
                        "{{priority}} {{reason}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Event loop lag (worst process)",
                (Query("max(keel_event_loop_lag_seconds)", "lag"),),
                unit="s",
            ),
        ),
    ),
    Row(
        "Limits and tenants",
        (
            Panel(
                "Top limit breaches (last hour)",
                (
                    Query(
                        "topk(10, sum by (limit) (increase(keel_ratelimit_breaches_total[1h])))",
                        "{{limit}}",
                    ),
                ),
            ),
            Panel(
                "Noisy neighbours",
                (
                    Query("max(keel_noisy_orgs)", "organisations flagged"),
                    Query(
                        "sum by (reason) (increase(keel_noisy_flags_total[1h]))",
                        "flags/h {{reason}}",
                    ),
                ),
            ),
            Panel(
                "Quota warnings (last hour)",
                (
                    Query(
                        "sum by (limit, threshold) (increase(keel_quota_warnings_total[1h]))",
                        "{{limit}} {{threshold}} %",
                    ),
                ),
            ),
            Panel(
                "Idempotency: replays and conflicts per second",
                (
                    Query(_rate("keel_idempotency_replays_total", "route"), "replay {{route}}"),
                    Query(_rate("keel_idempotency_conflicts_total", "route"), "conflict {{route}}"),
                    Query(
                        _rate("keel_idempotency_mismatches_total", "route"), "mismatch {{route}}"
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Limiter decisions made locally (Redis unavailable)",
                (
                    Query(
                        _rate("keel_ratelimit_fallback_decisions_total", "operation"),
                        "{{operation}}",
                    ),
                ),
                unit="reqps",
            ),
        ),
    ),
    Row(
        "Jobs",
        (
            Panel(
                "Queue depth",
                (Query("max by (queue, state) (keel_jobs_queue_depth)", "{{queue}} {{state}}"),),
                description="Read from the database by every process: max, never sum.",
            ),
            Panel(
                "Oldest ready job",
                (Query("max by (queue) (keel_jobs_oldest_ready_age_seconds)", "{{queue}}"),),
                unit="s",
            ),
            Panel(
                "Dead jobs (last hour)",
                (Query("sum by (job_type) (increase(keel_jobs_dead_total[1h]))", "{{job_type}}"),),
            ),
            Panel(
                "Job duration p95",
                (
                    Query(
                        _quantile("0.95", "keel_job_duration_seconds", "le, job_type"),
                        "{{job_type}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Worker processes (autoscaled)",
                (
                    Query("sum(keel_worker_processes)", "running", "worker"),
                    Query("sum(keel_worker_processes_wanted)", "wanted", "worker"),
                ),
            ),
        ),
    ),
    Row(
        "Dependencies",
        (
            Panel(
                "Breaker states",
                (
                    Query(
                        "max by (breaker, state) (keel_breaker_state) == 1", "{{breaker}} {{state}}"
                    ),
                ),
                description="One series per breaker, named by its current state.",
            ),
            Panel(
                "Dependency calls per second by outcome",
                (
                    Query(
                        _rate("keel_dependency_calls_total", "dependency, outcome"),
                        "{{dependency}} {{outcome}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Dependency call duration p99",
                (
                    Query(
                        _quantile(
                            "0.99", "keel_dependency_call_duration_seconds", "le, dependency"
                        ),
                        "{{dependency}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Bulkheads in use / capacity",
                (
                    Query(
                        "sum by (dependency) (keel_bulkhead_in_use)"
                        " / sum by (dependency) (keel_bulkhead_capacity)",
                        "{{dependency}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Database pool in use",
                (
                    Query(
                        "sum by (db_client_connection_pool_name) "
                        '(db_client_connection_count{db_client_connection_state="used"})',
                        "{{db_client_connection_pool_name}} used",
                    ),
                    Query(
                        "sum by (db_client_connection_pool_name) (db_client_connection_max)",
                        "{{db_client_connection_pool_name}} max",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Deploys and processes",
        (
            Panel(
                "Processes by version",
                (
                    Query(
                        "count by (version, git_sha) (keel_build_info)", "{{version}} {{git_sha}}"
                    ),
                ),
                description="More than one version at once: a canary or a blue-green switch.",
            ),
            Panel(
                "Share of requests by version",
                (
                    Query(
                        f"sum by (version) (rate({_HTTP}_count{{{_SLI}}}[{RATE}])"
                        " * on (instance, job) group_left (version) keel_build_info)",
                        "{{version}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Server worker restarts and dropped log lines",
                (
                    Query(
                        "sum(increase(keel_serve_worker_restarts_total[1h]))", "worker restarts/h"
                    ),
                    Query("sum(increase(keel_log_lines_dropped_total[1h]))", "log lines dropped/h"),
                ),
            ),
        ),
    ),
)


def rows(objectives: Sequence[Objective], histogram: RequestHistogram) -> tuple[Row, ...]:
    return (*(_slo_row(objective, histogram) for objective in objectives), *OPERATIONS)


def queries(board_rows: Sequence[Row]) -> list[Query]:
    return [query for row in board_rows for panel in row.panels for query in panel.queries]


_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_ROW_HEIGHT = 1
_PANEL_HEIGHT = 8
_GRID_WIDTH = 24


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {"h": _PANEL_HEIGHT, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": _DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def dashboard(objectives: Sequence[Objective], histogram: RequestHistogram) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schema 39), laid out row by row."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows(objectives, histogram):
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": _ROW_HEIGHT, "w": _GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += _ROW_HEIGHT
        x = 0
        for panel in row.panels:
            if x + panel.width > _GRID_WIDTH:
                x, y = 0, y + _PANEL_HEIGHT
            panels.append(_panel_json(panel, len(panels) + 1, x, y))
            x += panel.width
        y += _PANEL_HEIGHT
    return {
        "uid": DASHBOARD_UID,
        "title": "Keel",
        "description": "Generated by `keel slo dashboard` from the SLO file: regenerate it.",
        "tags": ["keel"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render_dashboard(objectives: Sequence[Objective], histogram: RequestHistogram) -> str:
    """Deterministic text (same SLOs, same bytes), so a committed copy can be checked."""
    return json.dumps(dashboard(objectives, histogram), indent=2, ensure_ascii=False) + "\n"


def write_dashboard(text: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DASHBOARD_FILE
    path.write_text(text, encoding="utf-8")
    return path

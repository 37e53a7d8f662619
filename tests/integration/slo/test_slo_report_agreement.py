"""``keel slo report`` agrees with the Prometheus rules on the same requests.

One made-up stretch of traffic (three days and two hours, one row of counts a
minute, with a quiet baseline and two incidents) is given twice: to the rollups,
through the flush's upsert (each minute in two halves, as two processes would
add it), and to ``promtool test rules`` as the request histogram's counters,
scraped once a minute, that the same requests would have produced. The report
read from the database at a whole hour then states each window's error ratio and
each alert's decision, and promtool checks the recording rules and alerts against
them at the same instants.

Tolerance: the error ratios must agree within a relative 1e-9 (an absolute 1e-12
for a ratio of zero). Both counters of a ratio are sampled at the same instants,
so Prometheus' extrapolation cancels out and only float rounding is left; a
window off by one minute would miss by far more than that. Alert decisions must
be identical. The period's ratio (30d, no recording rule) is checked with the
rules' own expression.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from tests.support.services import need_program

from keel.db.engine import Database
from keel.observe.metrics import request_histogram
from keel.slo import RULES_FILE, build_rules, write_rules
from keel.slo.report import SLOReport, read_reports
from keel.slo.rollup import add_counts
from keel.slo.rules import (
    NAME_LABEL,
    WORKBOOK_ALERTS,
    alert_annotations,
    alert_labels,
    error_ratio_expr,
    record_name,
)
from keel.slo.spec import STATUS_LABEL

HISTOGRAM = request_histogram(0.3)
FILES = build_rules(None, HISTOGRAM)
AVAILABILITY, LATENCY = FILES.objectives
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # promtool's time 0
MINUTES = (72 + 2) * 60
REQUESTS = 1000  # a minute
EVAL_HOURS = (73, 74)
# promtool test files that passed: the backends' reports give the same file (2 s saved).
_PASSED: set[str] = set()


def _minute(m: int) -> tuple[int, int]:
    """(5xx, slower than 0.3 s) of minute ``m``'s requests: a quiet baseline (0.02 % errors,
    about 0.5 % slow), a slow leak of errors from hour 30 to 48 (0.15 %), then a fast burn:
    1.2 % errors in the last 40 minutes, 20 % slow in the last 50."""
    errors = 1 if m % 5 == 0 else 0
    if 30 * 60 <= m < 48 * 60:
        errors = 1 + m % 2
    if m >= MINUTES - 40:
        errors = 12
    slow = 200 if m >= MINUTES - 50 else 4 + m % 3
    return errors, slow


def _counts() -> dict[tuple[str, int], tuple[int, int]]:
    counts = {}
    for m in range(MINUTES):
        errors, slow = _minute(m)
        counts[(AVAILABILITY.name, m)] = (REQUESTS, REQUESTS - errors)
        counts[(LATENCY.name, m)] = (REQUESTS, REQUESTS - slow)
    return counts


def _series(metric: str, labels: dict[str, str], per_minute: list[int]) -> dict[str, str]:
    values, total = ["0"], 0
    for count in per_minute:
        total += count
        values.append(str(total))
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{metric}{{{inner}}}", "values": " ".join(values)}


def _input_series() -> list[dict[str, str]]:
    """The histogram's counters for the same requests: 503s are fast, slow ones are 200s."""
    sample = dict(AVAILABILITY.sample)
    ok, failed = {**sample, STATUS_LABEL: "200"}, {**sample, STATUS_LABEL: "503"}
    minutes = [_minute(m) for m in range(MINUTES)]
    metric = HISTOGRAM.metric
    edge = LATENCY.threshold_le
    return [
        _series(f"{metric}_count", ok, [REQUESTS - e for e, _ in minutes]),
        _series(f"{metric}_count", failed, [e for e, _ in minutes]),
        _series(f"{metric}_bucket", {**ok, "le": edge}, [REQUESTS - e - s for e, s in minutes]),
        _series(f"{metric}_bucket", {**failed, "le": edge}, [e for e, _ in minutes]),
    ]


def _close_to(expr: str, value: float, labels: str) -> dict[str, Any]:
    tolerance = max(abs(value) * 1e-9, 1e-12)
    return {
        "expr": f"abs(({expr}) - {value!r}) <= bool {tolerance!r}",
        "exp_samples": [{"labels": labels, "value": 1}],
    }


def _checks(report: SLOReport, hour: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    objective = report.objective
    where = f'{{{NAME_LABEL}="{objective.name}"}}'
    ratios = []
    for reading in report.windows:
        assert reading.error_ratio is not None
        if reading.seconds == objective.period_seconds:
            expr = error_ratio_expr(objective, HISTOGRAM, reading.seconds)
            ratios.append({**_close_to(expr, reading.error_ratio, "{}"), "eval_time": f"{hour}h"})
        else:
            expr = f"{record_name(reading.seconds)}{where}"
            ratios.append({**_close_to(expr, reading.error_ratio, where), "eval_time": f"{hour}h"})
    alerts = []
    for alert, rule in zip(report.alerts, WORKBOOK_ALERTS, strict=True):
        expected = []
        if alert.firing:
            expected.append(
                {
                    "exp_labels": alert_labels(objective, rule),
                    "exp_annotations": alert_annotations(objective, rule),
                }
            )
        alerts.append({"eval_time": f"{hour}h", "alertname": alert.name, "exp_alerts": expected})
    return ratios, alerts


async def test_the_report_from_rollups_agrees_with_the_prometheus_rules(
    database: Database, tmp_path: Path
) -> None:
    promtool = need_program("promtool", "prometheus")
    counts = _counts()
    # Two processes' halves of every minute, added into one row each.
    for half in (lambda t: t // 2, lambda t: t - t // 2):
        await add_counts(database, {key: (half(t), half(g)) for key, (t, g) in counts.items()})

    ratio_checks: list[dict[str, Any]] = []
    alert_checks: list[dict[str, Any]] = []
    decisions = set()
    for hour in EVAL_HOURS:
        now = EPOCH + timedelta(hours=hour)
        for report in await read_reports(database, FILES.objectives, now):
            ratios, alerts = _checks(report, hour)
            ratio_checks += ratios
            alert_checks += alerts
            decisions |= {(a.name, a.firing) for a in report.alerts}
    # The scenario is worth checking: some alerts fire, others stay quiet, at each SLO.
    assert {name for name, firing in decisions if firing} >= {
        "KeelApiAvailabilityFastBurn",
        "KeelApiLatencyFastBurn",
        "KeelApiAvailabilityBudgetBurn",
    }
    assert {name for name, firing in decisions if not firing} >= {
        "KeelApiAvailabilitySlowBurn",
        "KeelApiLatencyBudgetBurn",
    }

    write_rules(FILES, tmp_path)
    tests = {
        "rule_files": [RULES_FILE],
        "evaluation_interval": "1h",
        "tests": [
            {
                "name": "the rollups' report",
                "interval": "1m",
                "input_series": _input_series(),
                "promql_expr_test": ratio_checks,
                "alert_rule_test": alert_checks,
            }
        ],
    }
    text = yaml.safe_dump(tests, width=10**9)
    if text in _PASSED:
        return  # another backend's report was the very same file, and promtool passed it
    (tmp_path / "agreement.test.yaml").write_text(text, "utf-8")
    tested = subprocess.run(
        [promtool, "test", "rules", "agreement.test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-4000:]
    _PASSED.add(text)

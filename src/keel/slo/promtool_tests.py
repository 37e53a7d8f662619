"""promtool unit tests for the SLO rules: each alert fires, and stays quiet, at the right rates.

For every SLO and every burn-rate alert, ``promtool test rules`` replays made-up
request counters and checks the alert at the end of its long window. Samples
come every sixth of the alert's short window (at least a minute): a 3-day window
sampled every minute made promtool take minutes, and a ratio of two counters does
not need finer steps. The scenarios:

- *fires*: a steady error ratio 25 % above the alert's threshold;
- *quiet below*: a steady error ratio 20 % below it;
- *quiet once recovered*: twice the threshold, then clean for two short windows —
  the long window alone would still fire (a check proves it), the short one
  resets the alert;
- *quiet on a short spike*: clean, then twice the threshold for one short window
  — the short window alone would fire (checked), the long one holds it back.

A further test per SLO checks the recorded error ratio itself while probes (and
whatever else the selector leaves out) fail on every request: they must not
move it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from keel.slo import synthetic_alert
from keel.slo.rules import (
    NAME_LABEL,
    RULES_FILE,
    WORKBOOK_ALERTS,
    BurnRateAlert,
    alert_annotations,
    alert_labels,
    alert_name,
    dump_yaml,
    record_name,
    threshold,
)
from keel.slo.spec import STATUS_LABEL, Objective, RequestHistogram, render_duration

TESTS_FILE = "keel-slo-rules.test.yaml"
REQUESTS_PER_SAMPLE = 100_000
# Seconds between rule evaluations; divides every eval_time below. Finer costs promtool
# time (the 3-day tests evaluated every 5 minutes took it ~10 s) and proves nothing more:
# no alert has a `for`, so an alert's state is its expression's at that instant.
EVALUATION_INTERVAL = 3600
# Label sets outside every sensible selector: probes and /metrics answer slo="false".
OUTSIDE_TRAFFIC: tuple[Mapping[str, str], ...] = (
    {"http_request_method": "GET", "http_route": "/ready", "slo": "false"},
    {"http_request_method": "GET", "http_route": "/metrics", "slo": "false"},
    {"http_request_method": "GET", "http_route": "/docs", "slo": "true"},
)


@dataclass(frozen=True, slots=True)
class Phase:
    """``samples`` sampling intervals, each with ``errors`` bad requests of REQUESTS_PER_SAMPLE."""

    samples: int
    errors: int


def _counter(phases: Sequence[Phase], per_sample: Callable[[Phase], int]) -> str:
    """promtool's expanding notation for a counter growing by ``per_sample(phase)``."""
    parts = ["0"]
    current = 0
    for phase in phases:
        step = per_sample(phase)
        first = current + step
        parts.append(str(first) if phase.samples == 1 else f"{first}+{step}x{phase.samples - 1}")
        current += step * phase.samples
    return " ".join(parts)


def _series(metric: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{name}="{value}"' for name, value in sorted(labels.items()))
    return f"{metric}{{{inner}}}"


def _input_series(
    objective: Objective,
    histogram: RequestHistogram,
    phases: Sequence[Phase],
    *,
    with_outside: bool = False,
) -> list[dict[str, str]]:
    total = REQUESTS_PER_SAMPLE
    count = f"{histogram.metric}_count"
    good = {**objective.sample, STATUS_LABEL: "200"}
    series: list[dict[str, str]] = []
    if objective.kind == "availability":
        bad = {**objective.sample, STATUS_LABEL: "503"}
        series.append(
            {"series": _series(count, good), "values": _counter(phases, lambda p: total - p.errors)}
        )
        series.append(
            {"series": _series(count, bad), "values": _counter(phases, lambda p: p.errors)}
        )
    else:
        edge = objective.threshold_le
        series.append({"series": _series(count, good), "values": _counter(phases, lambda p: total)})
        series.append(
            {
                "series": _series(f"{histogram.metric}_bucket", {**good, "le": edge}),
                "values": _counter(phases, lambda p: total - p.errors),
            }
        )
    if with_outside:
        series.extend(_outside_series(objective, histogram, phases))
    return series


def _outside_series(
    objective: Objective, histogram: RequestHistogram, phases: Sequence[Phase]
) -> list[dict[str, str]]:
    """Every request outside the selector fails (5xx, and slower than the threshold)."""
    series = []
    for labels in OUTSIDE_TRAFFIC:
        if all(matcher.matches(labels) for matcher in objective.selector):
            continue  # this selector counts that traffic: it is not "outside" here
        failing = {**labels, STATUS_LABEL: "503"}
        everything = _counter(phases, lambda p: REQUESTS_PER_SAMPLE)
        series.append(
            {"series": _series(f"{histogram.metric}_count", failing), "values": everything}
        )
        if objective.kind == "latency":
            edge = objective.threshold_le
            slow = _series(f"{histogram.metric}_bucket", {**failing, "le": edge})
            series.append({"series": slow, "values": _counter(phases, lambda p: 0)})
    return series


def _errors(ratio: Decimal, *, above: bool) -> int:
    """Bad requests a minute for ``ratio``, rounded away from the threshold it is tested at."""
    exact = ratio * REQUESTS_PER_SAMPLE
    return math.ceil(exact) if above else math.floor(exact)


def _ratio_above(objective: Objective, window: int, limit: Decimal) -> dict[str, Any]:
    """A PromQL check that the error ratio over ``window`` is above ``limit`` (1 = yes)."""
    where = f'{{{NAME_LABEL}="{objective.name}"}}'
    return {
        "expr": f"{record_name(window)}{where} > bool {limit.normalize():f}",
        "eval_time": None,  # filled by the caller
        "exp_samples": [{"labels": where, "value": 1}],
    }


def sample_interval(alert: BurnRateAlert) -> int:
    """A sixth of the short window, in whole minutes, at least one."""
    return max(60, alert.short_window // 6 // 60 * 60)


def _group(
    name: str,
    objective: Objective,
    histogram: RequestHistogram,
    phases: Sequence[Phase],
    alert: BurnRateAlert,
    *,
    fires: bool,
    also: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    interval = sample_interval(alert)
    eval_time = render_duration(sum(phase.samples for phase in phases) * interval)
    expected = []
    if fires:
        expected.append(
            {
                "exp_labels": {**alert_labels(objective, alert), NAME_LABEL: objective.name},
                "exp_annotations": alert_annotations(objective, alert),
            }
        )
    group: dict[str, Any] = {
        "name": name,
        "interval": render_duration(interval),
        "input_series": _input_series(objective, histogram, phases),
        "alert_rule_test": [
            {
                "eval_time": eval_time,
                "alertname": alert_name(objective, alert),
                "exp_alerts": expected,
            }
        ],
    }
    if also:
        group["promql_expr_test"] = [{**check, "eval_time": eval_time} for check in also]
    return group


def alert_groups(
    objective: Objective, histogram: RequestHistogram, alert: BurnRateAlert
) -> list[dict[str, Any]]:
    """The four scenarios of one alert of one SLO."""
    limit = threshold(objective, alert)
    long_samples = alert.long_window // sample_interval(alert)
    short_samples = alert.short_window // sample_interval(alert)
    above = _errors(limit * Decimal("1.25"), above=True)
    below = _errors(limit * Decimal("0.8"), above=False)
    double = _errors(limit * 2, above=True)
    title = f"{objective.name} {alert_name(objective, alert)}"
    return [
        _group(
            f"{title}: fires at 1.25x its threshold",
            objective,
            histogram,
            [Phase(long_samples, above)],
            alert,
            fires=True,
        ),
        _group(
            f"{title}: quiet at 0.8x its threshold",
            objective,
            histogram,
            [Phase(long_samples, below)],
            alert,
            fires=False,
        ),
        _group(
            f"{title}: quiet once the short window recovered",
            objective,
            histogram,
            [Phase(long_samples - 2 * short_samples, double), Phase(2 * short_samples, 0)],
            alert,
            fires=False,
            also=[_ratio_above(objective, alert.long_window, limit)],
        ),
        _group(
            f"{title}: quiet on a spike shorter than the long window",
            objective,
            histogram,
            [Phase(long_samples - short_samples, 0), Phase(short_samples, double)],
            alert,
            fires=False,
            also=[_ratio_above(objective, alert.short_window, limit)],
        ),
    ]


def exclusion_group(objective: Objective, histogram: RequestHistogram) -> dict[str, Any]:
    """The recorded ratio equals the selected traffic's while everything else fails."""
    errors = REQUESTS_PER_SAMPLE // 200  # 0.5 % bad
    phases = [Phase(EVALUATION_INTERVAL // 60, errors)]
    window = WORKBOOK_ALERTS[0].short_window
    ratio = Decimal(errors) / REQUESTS_PER_SAMPLE
    where = f'{{{NAME_LABEL}="{objective.name}"}}'
    return {
        "name": f"{objective.name}: traffic outside the selector does not count",
        "interval": "1m",
        "input_series": _input_series(objective, histogram, phases, with_outside=True),
        "promql_expr_test": [
            {
                "expr": f"abs({record_name(window)}{where} - {ratio.normalize():f}) < bool 1e-9",
                "eval_time": render_duration(EVALUATION_INTERVAL),
                "exp_samples": [{"labels": where, "value": 1}],
            }
        ],
    }


def unit_tests(
    objectives: Sequence[Objective],
    histogram: RequestHistogram,
    alerts: Sequence[BurnRateAlert] = WORKBOOK_ALERTS,
) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for objective in objectives:
        groups.append(exclusion_group(objective, histogram))
        for alert in alerts:
            groups.extend(alert_groups(objective, histogram, alert))
    groups.extend(synthetic_alert.unit_tests())
    evaluation = render_duration(EVALUATION_INTERVAL)
    return {"rule_files": [RULES_FILE], "evaluation_interval": evaluation, "tests": groups}


def render_unit_tests(objectives: Sequence[Objective], histogram: RequestHistogram) -> str:
    header = "# Generated by `keel slo rules`: run with `promtool test rules " + TESTS_FILE + "`.\n"
    return header + dump_yaml(unit_tests(objectives, histogram))

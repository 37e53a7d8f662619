"""The alert on failing synthetic checks, and its promtool tests.

Synthetic checks (:mod:`keel.synthetic`) count each step's runs in
``keel_synthetic_checks_total{step, outcome}``. The alert fires when more than
half of a step's runs over the last 10 minutes failed: a check runs every
minute, so one failure (a deploy's restart, a blip) stays quiet, and a step
that keeps failing pages within about six minutes. A ratio of counters, not a
last-result gauge, so any number of processes sum and a process that has not
run a check yet reads as no data, not as a failure.
"""

from __future__ import annotations

from typing import Any

CHECKS_METRIC = "keel_synthetic_checks_total"
ALERT_NAME = "KeelSyntheticCheckFailing"
WINDOW = "10m"
GROUP = "keel-synthetic-checks"


def alert_rule() -> dict[str, Any]:
    expr = (
        f'sum by (step) (increase({CHECKS_METRIC}{{outcome="failure"}}[{WINDOW}]))\n'
        f"/\n"
        f"sum by (step) (increase({CHECKS_METRIC}[{WINDOW}]))\n"
        f"> 0.5\n"
    )
    return {
        "alert": ALERT_NAME,
        "expr": expr,
        "labels": {"severity": "page"},
        "annotations": {
            "summary": "Synthetic check step {{ $labels.step }} is failing",
            "description": (
                f"More than half of the synthetic check's {{{{ $labels.step }}}} runs failed "
                f"over the last {WINDOW}. Run `keel synthetic run --target URL` to see the "
                "failing step's answer; see the README's runbook (synthetic checks)."
            ),
        },
    }


def rule_group() -> dict[str, Any]:
    return {"name": GROUP, "rules": [alert_rule()]}


def _series(step: str, outcome: str, values: str) -> dict[str, str]:
    return {"series": f'{CHECKS_METRIC}{{outcome="{outcome}",step="{step}"}}', "values": values}


def _expected(step: str) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": "page", "step": step},
        "exp_annotations": {
            "summary": f"Synthetic check step {step} is failing",
            "description": (
                f"More than half of the synthetic check's {step} runs failed over the last "
                f"{WINDOW}. Run `keel synthetic run --target URL` to see the failing step's "
                "answer; see the README's runbook (synthetic checks)."
            ),
        },
    }


def unit_tests() -> list[dict[str, Any]]:
    """Fires for a step that keeps failing (and only that step); quiet on one failure and
    once the step recovered. One run a minute, as the periodic job does; evaluated at whole
    hours, the tests' evaluation interval."""
    return [
        {
            "name": f"{ALERT_NAME}: fires for a step that keeps failing, only for that step",
            "interval": "1m",
            "input_series": [
                _series("create", "success", "0+0x70"),
                _series("create", "failure", "0+1x70"),
                _series("health", "success", "0+1x70"),
                _series("health", "failure", "0+0x70"),
            ],
            "alert_rule_test": [
                {"eval_time": "1h", "alertname": ALERT_NAME, "exp_alerts": [_expected("create")]}
            ],
        },
        {
            "name": f"{ALERT_NAME}: quiet on a single failure",
            "interval": "1m",
            "input_series": [
                _series("export", "success", "0+1x54 54 55+1x15"),
                _series("export", "failure", "0+0x54 1+0x16"),
            ],
            "alert_rule_test": [{"eval_time": "1h", "alertname": ALERT_NAME, "exp_alerts": []}],
        },
        {
            "name": f"{ALERT_NAME}: quiet once the step recovered",
            "interval": "1m",
            "input_series": [
                _series("read", "success", "0+0x60 1+1x70"),
                _series("read", "failure", "0+1x60 60+0x70"),
            ],
            "alert_rule_test": [
                {"eval_time": "1h", "alertname": ALERT_NAME, "exp_alerts": [_expected("read")]},
                {"eval_time": "2h", "alertname": ALERT_NAME, "exp_alerts": []},
            ],
        },
    ]

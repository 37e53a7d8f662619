"""The generated Prometheus rules: the SRE workbook's windows and burn rates, exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.observe.metrics import request_histogram
from keel.observe.version import slo_rule_files
from keel.settings import Settings
from keel.slo import (
    RULES_FILE,
    TESTS_FILE,
    WORKBOOK_ALERTS,
    SLOSpecError,
    build_rules,
    load_objectives,
)
from keel.slo.rules import rule_groups
from keel.slo.spec import default_slo_text

HISTOGRAM = request_histogram(0.3)
DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def _alerts() -> dict[str, dict[str, Any]]:
    groups = rule_groups(load_objectives(None, HISTOGRAM), HISTOGRAM)["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_a_30_day_period_gets_the_workbooks_burn_rates() -> None:
    rows = [
        (a.long_window, a.short_window, a.burn_rate(30 * 86400), a.severity)
        for a in WORKBOOK_ALERTS
    ]
    assert rows == [
        (3600, 300, Decimal("14.4"), "page"),
        (6 * 3600, 1800, Decimal(6), "page"),
        (3 * 86400, 6 * 3600, Decimal(1), "ticket"),
    ]


def test_another_period_scales_the_burn_rate_to_spend_the_same_budget_share() -> None:
    assert WORKBOOK_ALERTS[0].burn_rate(28 * 86400) == Decimal("13.44")


@pytest.mark.parametrize(
    ("alert", "long", "short", "limit", "severity"),
    [
        ("KeelApiAvailabilityFastBurn", "1h", "5m", "(14.4 * 0.0005)", "page"),
        ("KeelApiAvailabilitySlowBurn", "6h", "30m", "(6 * 0.0005)", "page"),
        ("KeelApiAvailabilityBudgetBurn", "3d", "6h", "(1 * 0.0005)", "ticket"),
        ("KeelApiLatencyFastBurn", "1h", "5m", "(14.4 * 0.01)", "page"),
        ("KeelApiLatencySlowBurn", "6h", "30m", "(6 * 0.01)", "page"),
        ("KeelApiLatencyBudgetBurn", "3d", "6h", "(1 * 0.01)", "ticket"),
    ],
)
def test_each_alert_needs_both_its_long_and_short_window_over_the_threshold(
    alert: str, long: str, short: str, limit: str, severity: str
) -> None:
    rule = _alerts()[alert]
    name = rule["labels"]["slo_name"]
    assert rule["expr"].split("\n") == [
        f'keel_slo:sli_error:ratio_rate{long}{{slo_name="{name}"}} > {limit}',
        "and",
        f'keel_slo:sli_error:ratio_rate{short}{{slo_name="{name}"}} > {limit}',
        "",
    ]
    assert rule["labels"]["severity"] == severity
    assert "for" not in rule  # the short window, not a delay, is what stops false alarms


def test_the_ratios_count_5xx_for_availability_and_the_threshold_bucket_for_latency() -> None:
    groups = rule_groups(load_objectives(None, HISTOGRAM), HISTOGRAM)["groups"]
    availability, latency, synthetic = (group["rules"][0] for group in groups)
    assert synthetic["alert"] == "KeelSyntheticCheckFailing"
    assert availability["record"] == "keel_slo:sli_error:ratio_rate5m"
    assert 'http_response_status_code=~"5.."}[5m]' in availability["expr"]
    assert '_bucket{slo="true",http_route=~"/v1/.*",le="0.3"}[5m]' in latency["expr"]
    assert latency["expr"].startswith("1 - (")


def test_rules_are_deterministic_and_their_hash_follows_the_slo_file(tmp_path: Path) -> None:
    first, again = build_rules(None, HISTOGRAM), build_rules(None, HISTOGRAM)
    assert first.rules == again.rules
    assert first.rules_hash == again.rules_hash
    assert len(first.rules_hash) == 64
    stricter = tmp_path / "slo.yaml"
    stricter.write_text(default_slo_text().replace("target: 0.9995", "target: 0.999"), "utf-8")
    changed = slo_rule_files(Settings.model_validate({"slo_file": stricter}))
    assert changed.rules_hash != first.rules_hash


def test_moving_the_latency_setting_off_the_files_threshold_is_refused() -> None:
    with pytest.raises(SLOSpecError, match=r"0\.3 s is not a bucket edge"):
        slo_rule_files(Settings.model_validate({"slo_latency_seconds": 0.2}))


def test_the_committed_deploy_files_are_what_keel_slo_rules_writes() -> None:
    files = build_rules(None, HISTOGRAM)
    assert (DEPLOY / RULES_FILE).read_text("utf-8") == files.rules, "run: keel slo rules"
    assert (DEPLOY / TESTS_FILE).read_text("utf-8") == files.tests, "run: keel slo rules"
    assert yaml.safe_load(files.tests)["rule_files"] == [RULES_FILE]


def test_keel_slo_rules_writes_both_files_and_refuses_a_bad_threshold(tmp_path: Path) -> None:
    written = CliRunner().invoke(cli, ["slo", "rules", "--output-dir", str(tmp_path), "--json"])
    assert written.exit_code == 0, written.output
    summary = json.loads(written.stdout)
    assert summary["rules_hash"] == build_rules(None, HISTOGRAM).rules_hash
    assert (tmp_path / RULES_FILE).is_file()
    assert (tmp_path / TESTS_FILE).is_file()
    bad = tmp_path / "slo.yaml"
    bad.write_text(default_slo_text().replace("value: 0.3", "value: 0.2"), "utf-8")
    refused = CliRunner().invoke(
        cli, ["slo", "rules", "--file", str(bad), "--output-dir", str(tmp_path / "out")]
    )
    assert refused.exit_code == 1
    assert "0.2 s is not a bucket edge" in " ".join(refused.output.split())
    assert not (tmp_path / "out").exists()

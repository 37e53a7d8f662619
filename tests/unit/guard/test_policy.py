"""Policy files: the shipped defaults, effective limits, and every refusal with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from keel.errors import ConfigurationError
from keel.guard.ratelimit.errors import PolicyError
from keel.guard.ratelimit.policy import (
    LimitOverride,
    QuotaRule,
    RateRule,
    default_policy,
    effective_limit,
    load_policy,
    parse_policy,
)

GOOD = """\
version = 1

[plans]
team = 2.0

[[limits]]
name = "api-user"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = 100
period_seconds = 60
burst = 20

[[limits]]
name = "exports-daily"
key = "user"
applies_to = ["exports.create"]
algorithm = "quota"
limit = 5
window = "day"
"""


def test_the_shipped_policy_has_the_nine_required_limits() -> None:
    policy = default_policy()
    names = {rule.name for rule in policy.limits}
    assert names == {
        "api-user",
        "api-org",
        "anon-ip",
        "auth-failures-ip",
        "admin-ops",
        "recognitions-daily",
        "exports-daily",
        "evidence-downloads-hourly",
        "evidence-uploads-hourly",
    }
    recognitions = policy.rule("recognitions-daily")
    assert isinstance(recognitions, QuotaRule)
    assert (recognitions.limit, recognitions.window, recognitions.key) == (10, "day", "user")
    failures = policy.rule("auth-failures-ip")
    assert isinstance(failures, RateRule)
    assert (failures.key, failures.period_seconds) == ("ip", 900)


def test_rules_without_multipliers_take_the_files() -> None:
    policy = parse_policy(GOOD)
    rule = policy.rule("api-user")
    assert rule.plans is not None
    assert rule.plans.team == 2.0


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    assert len(load_policy(path).limits) == 2


@pytest.mark.parametrize(
    ("plan", "override", "expected"),
    [
        ("free", None, (100, 20)),
        ("team", None, (200, 40)),
        ("team", LimitOverride(multiplier=1.5), (300, 60)),
        ("enterprise", LimitOverride(limit=7, burst=3), (7, 3)),
        ("free", LimitOverride(limit=500), (500, 20)),
    ],
)
def test_effective_limit_applies_plan_then_override(
    plan: str, override: LimitOverride | None, expected: tuple[int, int]
) -> None:
    rule = parse_policy(GOOD).rule("api-user")
    effective = effective_limit(rule, plan, override)  # type: ignore[arg-type]
    assert effective is not None
    assert (effective.limit, effective.burst) == expected


def test_a_disabled_override_lifts_the_rule() -> None:
    rule = parse_policy(GOOD).rule("api-user")
    assert effective_limit(rule, "free", LimitOverride(enabled=False)) is None


def test_scaled_limits_never_reach_zero() -> None:
    rule = parse_policy(GOOD).rule("exports-daily")
    effective = effective_limit(rule, "free", LimitOverride(multiplier=0.01))
    assert effective is not None
    assert effective.limit == 1


def test_file_overrides_are_read() -> None:
    policy = parse_policy(GOOD + '\n[overrides."org_1".exports-daily]\nlimit = 50\n')
    assert policy.overrides_for("org_1")["exports-daily"].limit == 50
    assert policy.overrides_for("org_2") == {}
    assert policy.overrides_for(None) == {}


def refusal(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(textwrap.dedent(text), source="policy.toml")
    return caught.value


def test_toml_syntax_error_names_its_line() -> None:
    error = refusal(GOOD.replace("limit = 5\n", "limit = = 5\n"))
    assert error.line == 20
    assert error.detail.startswith("policy.toml:20: TOML syntax")


def test_unknown_key_type_names_its_line() -> None:
    exports_key = 'key = "user"\napplies_to = ["exports'
    error = refusal(GOOD.replace(exports_key, exports_key.replace("user", "team")))
    assert error.line == 17
    assert "key" in error.message


def test_negative_number_names_its_line() -> None:
    error = refusal(GOOD.replace("burst = 20", "burst = -20"))
    assert error.line == 13
    assert "greater than 0" in error.message


def test_duplicate_name_names_the_second_definition() -> None:
    error = refusal(GOOD.replace('name = "exports-daily"', 'name = "api-user"'))
    assert error.line == 16
    assert "duplicate" in error.message


def test_misspelt_field_names_its_line() -> None:
    error = refusal(GOOD.replace("burst = 20", "brust = 20"))
    assert error.line == 13
    assert "brust" in error.message


def test_unknown_algorithm_names_its_line() -> None:
    error = refusal(GOOD.replace('algorithm = "quota"', 'algorithm = "leaky"'))
    assert error.line == 19


def test_missing_algorithm_names_the_table() -> None:
    error = refusal(GOOD.replace('algorithm = "quota"\n', ""))
    assert error.line == 15


def test_bad_window_names_its_line() -> None:
    error = refusal(GOOD.replace('window = "day"', 'window = "week"'))
    assert error.line == 21


def test_bad_target_names_its_line() -> None:
    error = refusal(GOOD.replace('applies_to = ["exports.create"]', 'applies_to = ["FETCH /x"]'))
    assert error.line == 18
    assert "FETCH /x" in error.message


def test_a_rate_too_fine_to_resolve_is_refused() -> None:
    error = refusal(GOOD.replace("limit = 100", "limit = 100000"))
    assert error.line == 6
    assert "per second" in error.message or "a second" in error.message


def test_bad_plan_multiplier_names_its_line() -> None:
    error = refusal(GOOD.replace("team = 2.0", "team = -2.0"))
    assert error.line == 4


def test_override_of_unknown_limit_names_its_line() -> None:
    error = refusal(GOOD + '\n[overrides."org_1".nope]\nlimit = 50\n')
    assert error.line == 23
    assert "nope" in error.message


def test_negative_override_names_its_line() -> None:
    error = refusal(GOOD + '\n[overrides."org_1".exports-daily]\nlimit = -1\n')
    assert error.line == 24


def test_wrong_version_is_refused() -> None:
    error = refusal(GOOD.replace("version = 1", "version = 2"))
    assert error.line == 1


def test_policy_error_is_a_configuration_error() -> None:
    assert issubclass(PolicyError, ConfigurationError)

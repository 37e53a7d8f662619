"""promtool accepts the generated rules, and their unit tests pass — and would catch a fault.

promtool is the Debian package ``prometheus`` (``.ci/run`` installs it). Without
it these tests skip, unless ``KEEL_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from tests.support.services import need_program

from keel.observe.metrics import request_histogram
from keel.slo import RULES_FILE, TESTS_FILE, build_rules, write_rules


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    promtool = need_program("promtool", "prometheus")
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules_and_their_unit_tests_pass(tmp_path: Path) -> None:
    write_rules(build_rules(None, request_histogram(0.3)), tmp_path)
    checked = _promtool("check", "rules", RULES_FILE, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 17 rules found" in checked.stdout
    tested = _promtool("test", "rules", TESTS_FILE, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_unit_tests_fail_rules_that_page_too_early_or_ignore_the_short_window(
    tmp_path: Path,
) -> None:
    files = build_rules(None, request_histogram(0.3))
    write_rules(files, tmp_path)
    # A fast-burn threshold ten times too low, and a slow burn whose windows are ORed.
    broken = files.rules.replace("(14.4 * 0.0005)", "(1.44 * 0.0005)")
    at = files.rules.index("alert: KeelApiLatencySlowBurn")
    broken = broken[:at] + broken[at:].replace("\n      and\n", "\n      or\n", 1)
    assert broken.count("(1.44 * 0.0005)") == 2
    assert broken.count("\n      or\n") == 1
    (tmp_path / RULES_FILE).write_text(broken, "utf-8")
    fast, slow = (
        "api-availability KeelApiAvailabilityFastBurn",
        "api-latency KeelApiLatencySlowBurn",
    )
    # Only the two broken alerts' tests (all of them, passing ones too): promtool is slow.
    tests = yaml.safe_load(files.tests)
    tests["tests"] = [t for t in tests["tests"] if t["name"].startswith((fast, slow))]
    assert len(tests["tests"]) == 8
    (tmp_path / TESTS_FILE).write_text(yaml.safe_dump(tests), "utf-8")
    tested = _promtool("test", "rules", TESTS_FILE, cwd=tmp_path)
    assert tested.returncode != 0
    failed = {
        line.strip().removeprefix("name: ").rstrip(",")
        for line in (tested.stdout + tested.stderr).splitlines()
        if line.strip().startswith("name: ")
    }
    fast, slow = (
        "api-availability KeelApiAvailabilityFastBurn",
        "api-latency KeelApiLatencySlowBurn",
    )
    assert failed == {
        f"{fast}: quiet at 0.8x its threshold",
        f"{fast}: quiet on a spike shorter than the long window",
        f"{slow}: quiet once the short window recovered",
        f"{slow}: quiet on a spike shorter than the long window",
    }

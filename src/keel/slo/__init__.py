"""Service level objectives: the SLO file, its Prometheus rules and their promtool tests.

``spec`` reads and checks the OpenSLO-like file against the request histogram
the running code exposes; ``rules`` turns it into recording rules and the SRE
workbook's multiwindow, multi-burn-rate alerts; ``promtool_tests`` writes the
unit tests that prove each alert fires, and stays quiet, at the right error
rates. ``write_rules`` is what ``keel slo rules`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keel.slo.promtool_tests import TESTS_FILE, render_unit_tests
from keel.slo.rules import (
    RULES_FILE,
    WORKBOOK_ALERTS,
    BurnRateAlert,
    render_rules,
    rules_hash,
)
from keel.slo.spec import (
    Objective,
    RequestHistogram,
    SLOSpecError,
    load_objectives,
    objectives_json,
    parse_objectives,
)


@dataclass(frozen=True, slots=True)
class RuleFiles:
    """The generated rules and their unit tests, as text, with the rules' hash."""

    objectives: tuple[Objective, ...]
    rules: str
    tests: str

    @property
    def rules_hash(self) -> str:
        return rules_hash(self.rules)


def build_rules(path: Path | None, histogram: RequestHistogram) -> RuleFiles:
    """The rules and tests for the SLO file at ``path`` (``None``: the shipped one)."""
    objectives = load_objectives(path, histogram)
    return RuleFiles(
        objectives, render_rules(objectives, histogram), render_unit_tests(objectives, histogram)
    )


def write_rules(files: RuleFiles, directory: Path) -> tuple[Path, Path]:
    """Write ``keel-slo-rules.yaml`` and ``keel-slo-rules.test.yaml`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rules, tests = directory / RULES_FILE, directory / TESTS_FILE
    rules.write_text(files.rules, encoding="utf-8")
    tests.write_text(files.tests, encoding="utf-8")
    return rules, tests


__all__ = [
    "RULES_FILE",
    "TESTS_FILE",
    "WORKBOOK_ALERTS",
    "BurnRateAlert",
    "Objective",
    "RequestHistogram",
    "RuleFiles",
    "SLOSpecError",
    "build_rules",
    "load_objectives",
    "objectives_json",
    "parse_objectives",
    "write_rules",
]

"""Synthetic checks: a client's journey run against the service, marked so SLIs skip it.

``checks`` holds the steps and :func:`run_checks` (``keel synthetic run``);
``job`` the periodic check; ``marker`` the ``Keel-Synthetic`` header and who
may send it; ``metrics`` what the steps report.
"""

from __future__ import annotations

from keel.synthetic.checks import STEPS, StepResult, SyntheticRun, run_checks
from keel.synthetic.marker import SYNTHETIC_HEADER, is_synthetic

__all__ = [
    "STEPS",
    "SYNTHETIC_HEADER",
    "StepResult",
    "SyntheticRun",
    "is_synthetic",
    "run_checks",
]

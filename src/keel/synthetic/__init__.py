"""Synthetic checks: a client's journey run against the service, marked so SLIs skip it.

``checks`` holds the steps and :func:`run_checks` (``keel synthetic run``);
``job`` the periodic check; ``metrics`` what the steps report. Which requests
count as synthetic on the server is the request path's decision
(:mod:`keel.http.synthetic`).
"""

from __future__ import annotations

from keel.synthetic.checks import STEPS, SYNTHETIC_HEADER, StepResult, SyntheticRun, run_checks

__all__ = [
    "STEPS",
    "SYNTHETIC_HEADER",
    "StepResult",
    "SyntheticRun",
    "run_checks",
]

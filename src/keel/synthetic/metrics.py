"""What synthetic checks report to Prometheus: each step's outcome and duration.

On prometheus_client's process-wide registry, as the other subsystems' metrics
are: the periodic check runs in whichever process runs jobs (``keel worker``,
or the worker inside ``keel serve`` on SQLite) and that process's ``/metrics``
serves them. A counter by outcome, not a last-result gauge, so several
processes sum, a restart loses nothing, and a fresh process reads "no checks
yet" rather than "failed".
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHECKS = Counter(
    "keel_synthetic_checks_total",
    "Synthetic check steps run, by step and outcome.",
    ["step", "outcome"],
)
DURATION = Histogram(
    "keel_synthetic_check_duration_seconds",
    "How long each synthetic check step took.",
    ["step"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OUTCOMES = ("success", "failure")


def declare(steps: tuple[str, ...]) -> None:
    """Every step's series at zero from the first scrape."""
    for step in steps:
        DURATION.labels(step)
        for outcome in OUTCOMES:
            CHECKS.labels(step, outcome)

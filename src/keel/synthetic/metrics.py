"""What synthetic checks report to Prometheus: each step's outcome and duration.

Built on the registry of whichever process runs the check — the job worker
(``keel worker``, or the worker inside ``keel serve``) hands it to the periodic
job; ``keel synthetic run`` reports on its output only. A counter by outcome,
not a last-result gauge, so several processes sum, a restart loses nothing, and
a fresh process reads "no checks yet" rather than "failed".
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

OUTCOMES = ("success", "failure")


class SyntheticMetrics:
    """The check's families on ``registry`` (``None``: registered nowhere)."""

    def __init__(self, steps: tuple[str, ...], registry: CollectorRegistry | None = None) -> None:
        self.checks = Counter(
            "keel_synthetic_checks_total",
            "Synthetic check steps run, by step and outcome.",
            ["step", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "keel_synthetic_check_duration_seconds",
            "How long each synthetic check step took.",
            ["step"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        for step in steps:  # every step's series at zero from the first scrape
            self.duration.labels(step)
            for outcome in OUTCOMES:
                self.checks.labels(step, outcome)

    def record(self, step: str, ok: bool, seconds: float) -> None:
        self.checks.labels(step, "success" if ok else "failure").inc()
        self.duration.labels(step).observe(seconds)

"""Prometheus counters of the idempotency guard, labelled by method and route template.

Built on the app's registry by the composition root and handed to the replay and
idempotency steps of the request path; route templates keep the label set small
and fixed.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

_LABELS = ("method", "route")


class IdempotencyMetrics:
    """The guard's five counters on ``registry`` (``None``: registered nowhere)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.replays = Counter(
            "keel_idempotency_replays",
            "Keyed requests answered with a stored outcome (Idempotent-Replayed: true).",
            _LABELS,
            registry=registry,
        )
        self.conflicts = Counter(
            "keel_idempotency_conflicts",
            "Keyed requests refused with 409 because a request with the same key was in flight.",
            _LABELS,
            registry=registry,
        )
        self.mismatches = Counter(
            "keel_idempotency_mismatches",
            "Keyed requests refused with 422 because the key was used with a different request.",
            _LABELS,
            registry=registry,
        )
        self.takeovers = Counter(
            "keel_idempotency_takeovers",
            "Claims taken over after their lease expired (a request died or hung).",
            _LABELS,
            registry=registry,
        )
        self.releases = Counter(
            "keel_idempotency_releases",
            "Claims given back without a stored outcome (refused before work, or rolled back).",
            _LABELS,
            registry=registry,
        )

    def declare(self, operations: Iterable[str]) -> None:
        """Create every counter's series for ``operations`` at zero."""
        for operation in operations:
            method, _, route = operation.partition(" ")
            for counter in (
                self.replays,
                self.conflicts,
                self.mismatches,
                self.takeovers,
                self.releases,
            ):
                counter.labels(method=method, route=route)


def count(counter: Counter, operation: str) -> None:
    """Add one for ``operation`` (``"POST /v1/recognitions"``)."""
    method, _, route = operation.partition(" ")
    counter.labels(method=method, route=route).inc()

"""Prometheus counters of the idempotency guard, labelled by method and route template.

Registered once in the process-wide default registry (what ``/metrics``
exposes); route templates keep the label set small and fixed.
"""

from __future__ import annotations

from prometheus_client import Counter

REPLAYS = Counter(
    "keel_idempotency_replays",
    "Keyed requests answered with a stored outcome (Idempotent-Replayed: true).",
    ["method", "route"],
)
CONFLICTS = Counter(
    "keel_idempotency_conflicts",
    "Keyed requests refused with 409 because a request with the same key was in flight.",
    ["method", "route"],
)
MISMATCHES = Counter(
    "keel_idempotency_mismatches",
    "Keyed requests refused with 422 because the key was used with a different request.",
    ["method", "route"],
)
TAKEOVERS = Counter(
    "keel_idempotency_takeovers",
    "Claims taken over after their lease expired (a request died or hung).",
    ["method", "route"],
)
RELEASES = Counter(
    "keel_idempotency_releases",
    "Claims given back without a stored outcome (refused before work, or rolled back).",
    ["method", "route"],
)


def count(counter: Counter, operation: str) -> None:
    """Add one for ``operation`` (``"POST /v1/recognitions"``)."""
    method, _, route = operation.partition(" ")
    counter.labels(method=method, route=route).inc()

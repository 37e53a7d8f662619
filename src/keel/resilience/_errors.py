"""The resilience layer's errors: one small subtree under ``DependencyUnavailable``.

All of them map to 503 with ``Retry-After`` through the API's single problem mapper, and
all carry the dependency's name, so a caller never needs to know which layer said no.
"""

from __future__ import annotations

import math
from typing import Any

from keel.errors import DependencyUnavailable


def retry_after_seconds(seconds: float) -> int:
    """A ``Retry-After`` header value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


class BreakerOpen(DependencyUnavailable):
    """The breaker rejected the call (OPEN, FORCED_OPEN, or HALF_OPEN with no probe left)."""

    slug = "breaker-open"
    title = "Dependency circuit open"

    def __init__(self, breaker: str, state: str, *, retry_after: int, **extensions: Any) -> None:
        super().__init__(
            f"circuit breaker {breaker!r} is {state}",
            retry_after=retry_after,
            breaker=breaker,
            state=state,
            **extensions,
        )
        self.breaker = breaker
        self.state = state


class BulkheadFull(DependencyUnavailable):
    """Every slot for the dependency was taken for longer than the bounded wait."""

    slug = "bulkhead-full"
    title = "Dependency at capacity"


class DependencyTimeout(DependencyUnavailable):
    """An attempt took longer than the dependency's timeout and was cancelled."""

    slug = "dependency-timeout"
    title = "Dependency timed out"


class DependencyFailed(DependencyUnavailable):
    """The dependency failed (after any retries) and no fallback answered.

    The dependency's own exception is the ``__cause__``.
    """

    slug = "dependency-failed"
    title = "Dependency failed"


class StateStoreUnavailable(DependencyUnavailable):
    """The shared breaker state store could not be read or written.

    Breakers swallow it and carry on with their local state; only operator commands
    (``keel breakers …``) let it reach a person.
    """

    slug = "breaker-store-unavailable"
    title = "Circuit breaker state store unavailable"

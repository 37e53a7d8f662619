"""The rate limiter's small subtree of :class:`keel.errors.KeelError`.

Backends translate their own failures (a Redis timeout, a refused connection)
into :class:`LimiterUnavailable` at the storage seam, as ``limits`` does, so
the fallback wrapper and the API layer never import ``redis``.
"""

from __future__ import annotations

import math
from typing import Any

from keel.errors import ConfigurationError, DependencyUnavailable, KeelError


class LimitExceeded(KeelError):
    """A rate limit or quota refused the request (429 + ``Retry-After``)."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(
        self,
        detail: str | None = None,
        *,
        limit_name: str,
        retry_after: float,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail, limit=limit_name, **extensions)
        self.limit_name = limit_name
        self.retry_after = retry_after
        if headers:
            self.headers.update(headers)
        # Retry-After is integer seconds and never 0: a 0 invites an instant retry.
        self.headers.setdefault(
            "Retry-After", str(max(1, math.ceil(retry_after)) if math.isfinite(retry_after) else 1)
        )


class LimiterUnavailable(DependencyUnavailable):
    """The limiter's shared store (Redis) failed or timed out."""

    slug = "limiter-unavailable"
    title = "Rate limiter store unavailable"


class PolicyError(ConfigurationError):
    """A rate-limit policy file Keel refuses to start with; names the line."""

    title = "Invalid rate-limit policy"

    def __init__(self, message: str, *, source: str, line: int | None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}", source=source, line=line)
        self.line = line
        self.source = source
        self.message = message

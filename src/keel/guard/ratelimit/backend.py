"""The storage seam: what a limiter backend does, whatever it keeps state in.

Two real implementations: :class:`~keel.guard.ratelimit.memory.MemoryBackend`
(one process) and :class:`~keel.guard.ratelimit.redis_backend.RedisBackend`
(shared by every instance), plus :class:`~keel.guard.ratelimit.fallback.FallbackBackend`
which wraps the two. The same contract test suite runs against each.

Every method takes ``now`` (epoch seconds) instead of reading a clock, so
tests drive time and Redis never uses its own ``TIME``: all instances agree on
the arithmetic as long as their clocks roughly agree, and a test can jump time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from keel.guard.ratelimit.gcra import GcraDecision, Rate
from keel.guard.ratelimit.quota import QuotaDecision, QuotaWindow


@dataclass(frozen=True, slots=True)
class SlotDecision:
    """The outcome of asking for a concurrency slot.

    ``slot_id`` is what to pass to ``slot_release`` (``None`` when refused).
    ``in_flight`` counts live leases after the call; when refused,
    ``retry_after`` is the wait until the earliest lease expires — an upper
    bound, since a slot is usually released long before its lease runs out.
    """

    acquired: bool
    slot_id: str | None
    in_flight: int
    limit: int
    retry_after: float


class LimiterBackend(Protocol):
    """State for rate limits (GCRA), calendar quotas and concurrency slots.

    Implementations raise :class:`~keel.guard.ratelimit.errors.LimiterUnavailable`
    (and nothing backend-specific) when their store fails.
    """

    async def gcra(self, key: str, rate: Rate, now: float, n: int = 1) -> GcraDecision:
        """Admit ``n`` cells for ``key`` if they fit; store the new TAT only if admitted."""
        ...

    async def quota_check(
        self, key: str, limit: int, window: QuotaWindow, now: float, n: int = 1
    ) -> QuotaDecision:
        """Peek: would ``n`` more fit in the window holding ``now``? Consumes nothing."""
        ...

    async def quota_consume(
        self,
        key: str,
        limit: int,
        window: QuotaWindow,
        now: float,
        n: int = 1,
        *,
        overdraft: bool = False,
    ) -> QuotaDecision:
        """Count ``n`` in the window holding ``now``, atomically, if they fit.

        With ``overdraft=True`` the count is recorded even past the limit —
        what a caller wants after an operation that already succeeded, so the
        count stays truthful and the next check refuses.
        """
        ...

    async def quota_refund(
        self, key: str, window: QuotaWindow, consumed_at: float, n: int = 1
    ) -> None:
        """Give back ``n`` counted at ``consumed_at`` (never below zero)."""
        ...

    async def slot_acquire(self, key: str, limit: int, lease: float, now: float) -> SlotDecision:
        """Take one of ``limit`` in-flight slots for ``lease`` seconds.

        The lease is what keeps a crashed process from leaking its slots:
        expired leases are dropped on the next acquire.
        """
        ...

    async def slot_release(self, key: str, slot_id: str) -> None:
        """Return a slot early. Releasing an unknown or expired slot is a no-op."""
        ...

    async def aclose(self) -> None:
        """Release connections the backend owns."""
        ...

"""The storage seam: what a limiter backend does, whatever it keeps state in.

Two real implementations: :class:`~keel.guard.ratelimit.memory.MemoryBackend`
(one process) and :class:`~keel.guard.ratelimit.redis_backend.RedisBackend`
(shared by every instance), plus :class:`~keel.guard.ratelimit.fallback.FallbackBackend`
which wraps the two. The same contract test suite runs against each.

Every method takes ``now`` (epoch seconds) instead of reading a clock, so
tests drive time and Redis never uses its own ``TIME``: all instances agree on
the arithmetic as long as their clocks roughly agree, and a test can jump time.

:meth:`LimiterBackend.admit` is the request path: every limit a request
passes, decided at once, all or nothing (one Lua script call on Redis). The
single-limit methods serve peeks (``/v1/quotas``), quota releases after a
failed request (:meth:`LimiterBackend.quota_refund`), slot releases, and tests
of each algorithm on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

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


class RateCheck(NamedTuple):
    """A rate limit to pass: ``n`` GCRA cells for ``key``.

    ``admit`` takes any ``(key, rate)`` tuple; this names the fields. A hot
    caller may pass plain tuples and skip the named tuple's Python-level
    constructor, which is a measurable share of a memory-backend decision.
    """

    key: str
    rate: Rate


class QuotaCheck(NamedTuple):
    """A quota to reserve ``n`` of, in the window holding ``now``, if they fit."""

    key: str
    limit: int
    window: QuotaWindow


class SlotClaim(NamedTuple):
    """An in-flight slot to take for ``lease`` seconds, one of ``limit`` for ``key``."""

    key: str
    limit: int
    lease: float


class Admission(NamedTuple):
    """The outcome of :meth:`LimiterBackend.admit`, one reading per check, in order.

    When ``allowed`` is true each quota reading counts this request's
    reservation (``used`` includes its ``n``). When ``allowed`` is false
    nothing was consumed anywhere, and every reading says so: a rate check
    that would have passed reads as a peek (``n = 0``), a quota the count as
    it stands, a slot that would have been free reads ``acquired=False,
    retry_after=0``.
    """

    allowed: bool
    rates: tuple[GcraDecision, ...]
    quotas: tuple[QuotaDecision, ...]
    slots: tuple[SlotDecision, ...]


class LimiterBackend(Protocol):
    """State for rate limits (GCRA), calendar quotas and concurrency slots.

    Implementations raise :class:`~keel.guard.ratelimit.errors.LimiterUnavailable`
    (and nothing backend-specific) when their store fails.
    """

    async def admit(
        self,
        rates: Sequence[tuple[str, Rate]],
        quotas: Sequence[tuple[str, int, QuotaWindow]],
        slots: Sequence[tuple[str, int, float]],
        now: float,
        n: int = 1,
    ) -> Admission:
        """Decide every limit of one request at once, all or nothing.

        Admitted only if every rate check has ``n`` cells, every quota has room
        for ``n`` more and every slot claim finds a free slot; then the cells
        are spent, ``n`` units of every quota *reserved* (counted) and the
        slots taken, in one atomic step: concurrent admissions — on any
        instance sharing the backend — can never pass a quota together.
        Otherwise nothing is written (beyond dropping expired leases and
        clamping a TAT a backwards clock left too far ahead, neither of which
        grants or spends anything). Quotas count successes: a caller whose
        operation then fails gives the units back with :meth:`quota_refund`
        (passing this ``now`` as ``consumed_at``).
        Keys within one call must be distinct (the limiter's keys carry the
        rule name, so they are). Checks are :class:`RateCheck`,
        :class:`QuotaCheck` and :class:`SlotClaim`, or the same plain tuples.
        """
        ...

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

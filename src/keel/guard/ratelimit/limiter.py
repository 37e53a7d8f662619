"""The limiter service: every applicable rule for a request, in one decision.

:class:`RateLimiter` is what the (future) ASGI middleware calls. It knows the
rules and the backend, nothing of HTTP: the request arrives as a
:class:`RequestContext` and leaves as a :class:`Decision`, which
:mod:`keel.guard.ratelimit.headers` turns into response headers.

:meth:`RateLimiter.decide` hands every applicable rule — and the request's
concurrency slots, when the caller asks for them — to the backend as one
all-or-nothing :meth:`~keel.guard.ratelimit.backend.LimiterBackend.admit`
(one Lua script call on Redis): quotas are *peeked*, rate cells are *spent*
and slots *taken* only if nothing refuses. A request refused by its org's
limit has therefore spent nothing of its user's. Quotas are consumed later,
by :meth:`RateLimiter.commit_quota`, once the operation succeeded (quotas
count successes). When several rules refuse, the one reported is the first in
policy order, quotas before rates, as a client would hit them one by one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from keel.guard.ratelimit.backend import (
    LimiterBackend,
    QuotaCheck,
    RateCheck,
    SlotClaim,
    SlotDecision,
)
from keel.guard.ratelimit.headers import quota_threshold_crossed
from keel.guard.ratelimit.policy import (
    EffectiveLimit,
    LimitOverride,
    Plan,
    QuotaRule,
    RateRule,
    effective_limit,
)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, for what. ``None`` fields are unknown (anonymous, no org…).

    ``route`` is the route template ("POST /v1/recognitions"), ``operation``
    the domain operation ("recognitions.create"); a rule matches either.
    ``timezone`` is the organisation's IANA zone for calendar quotas;
    ``overrides`` the organisation's per-rule overrides (by rule name).
    """

    route: str | None = None
    operation: str | None = None
    user_id: str | None = None
    org_id: str | None = None
    plan: Plan = "free"
    ip: str | None = None
    token_id: str | None = None
    timezone: str = "UTC"
    overrides: Mapping[str, LimitOverride] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return self.user_id is None

    def key_for(self, kind: Literal["user", "org", "ip", "token"]) -> str | None:
        return {"user": self.user_id, "org": self.org_id, "ip": self.ip, "token": self.token_id}[
            kind
        ]


@dataclass(frozen=True, slots=True)
class LimitResult:
    """One rule's reading for one request, in the units headers need.

    ``quota`` and ``window`` are the policy's numbers (``q``/``w`` of
    RateLimit-Policy); ``remaining`` and ``reset_after`` the live ones
    (``r``/``t`` of RateLimit).
    """

    name: str
    algorithm: Literal["rate", "quota"]
    key: str
    allowed: bool
    quota: int
    window: float
    remaining: int
    reset_after: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on a request: allowed or not, and every rule's reading.

    ``breached`` is the rule that refused (``None`` when allowed, or when
    only a concurrency slot refused). On a refusal ``results`` stops at the
    breach, and no reading reflects a spend, since nothing was spent.
    ``slots`` answers the slot claims passed to :meth:`RateLimiter.decide`,
    in order; ``refused_slot`` is the index of the first one that was full.
    ``most_restrictive`` is the reading to report in the single-policy
    headers (``X-RateLimit-*``): the breach, else the fewest remaining.
    """

    allowed: bool
    results: tuple[LimitResult, ...]
    breached: LimitResult | None = None
    slots: tuple[SlotDecision, ...] = ()

    @property
    def refused_slot(self) -> int | None:
        if self.allowed or self.breached is not None:
            return None
        for index, slot in enumerate(self.slots):
            if slot.in_flight >= slot.limit:
                return index
        return None

    @property
    def most_restrictive(self) -> LimitResult | None:
        if self.breached is not None:
            return self.breached
        if not self.results:
            return None
        return min(self.results, key=lambda r: (r.remaining, -r.reset_after))

    @property
    def retry_after(self) -> float:
        """Seconds until this request could succeed (0 when allowed)."""
        return self.breached.retry_after if self.breached is not None else 0.0


@dataclass(frozen=True, slots=True)
class QuotaCommit:
    """A quota consumed after success, and the warning threshold it crossed, if any."""

    name: str
    used: int
    limit: int
    reset_after: float
    crossed: int | None


class RateLimiter:
    """Evaluates rules against a backend. One per application, shared by requests."""

    def __init__(self, backend: LimiterBackend, *, key_prefix: str = "") -> None:
        self.backend = backend
        self._prefix = key_prefix

    def applicable(
        self, limits: Iterable[RateRule | QuotaRule], context: RequestContext
    ) -> list[tuple[EffectiveLimit, str]]:
        """The rules covering this request, with enforced numbers and storage keys."""
        chosen: list[tuple[EffectiveLimit, str]] = []
        for rule in limits:
            if not rule.applies(route=context.route, operation=context.operation):
                continue
            if rule.principal == "anonymous" and not context.anonymous:
                continue
            if rule.principal == "authenticated" and context.anonymous:
                continue
            subject = context.key_for(rule.key)
            if subject is None:
                continue
            effective = effective_limit(rule, context.plan, context.overrides.get(rule.name))
            if effective is None:
                continue
            chosen.append((effective, f"{self._prefix}{rule.name}:{rule.key}:{subject}"))
        return chosen

    async def decide(
        self,
        limits: Iterable[RateRule | QuotaRule],
        context: RequestContext,
        now: float,
        *,
        cost: int = 1,
        slots: Sequence[SlotClaim] = (),
    ) -> Decision:
        """Admit or refuse a request: every rule and slot claim, all or nothing.

        One backend call: nothing is spent or taken unless everything fits.
        """
        quota_rules: list[tuple[EffectiveLimit, str]] = []
        rate_rules: list[tuple[EffectiveLimit, str]] = []
        quotas: list[QuotaCheck] = []
        rates: list[RateCheck] = []
        for effective, key in self.applicable(limits, context):
            if isinstance(effective.rule, QuotaRule):
                quota_rules.append((effective, key))
                quotas.append(QuotaCheck(key, effective.limit, effective.window(context.timezone)))
            else:
                rate_rules.append((effective, key))
                rates.append(RateCheck(key, effective.rate))
        admission = await self.backend.admit(rates, quotas, slots, now, cost)
        results: list[LimitResult] = []
        for (effective, key), q in zip(quota_rules, admission.quotas, strict=True):
            result = LimitResult(
                name=effective.name,
                algorithm="quota",
                key=key,
                allowed=q.allowed,
                quota=effective.limit,
                window=q.window_end - q.window_start,
                remaining=q.remaining,
                reset_after=q.reset_after,
                retry_after=q.retry_after,
            )
            results.append(result)
            if not result.allowed:
                return Decision(False, tuple(results), result, admission.slots)
        for (effective, key), check, g in zip(rate_rules, rates, admission.rates, strict=True):
            rate = check.rate
            result = LimitResult(
                name=effective.name,
                algorithm="rate",
                key=key,
                allowed=g.allowed,
                quota=rate.limit,
                window=rate.period,
                remaining=g.remaining,
                reset_after=g.reset_after,
                retry_after=g.retry_after,
            )
            results.append(result)
            if not result.allowed:
                return Decision(False, tuple(results), result, admission.slots)
        return Decision(admission.allowed, tuple(results), None, admission.slots)

    async def commit_quota(
        self,
        limits: Iterable[RateRule | QuotaRule],
        context: RequestContext,
        now: float,
        n: int = 1,
    ) -> tuple[QuotaCommit, ...]:
        """Count ``n`` successes against every applicable quota.

        Always recorded (overdraft): the operation already happened, so the
        count must say so even if a concurrent request got there first.
        ``crossed`` tells the caller which 80/90/100 % warning to emit, once.
        """
        commits: list[QuotaCommit] = []
        for effective, key in self.applicable(limits, context):
            if not isinstance(effective.rule, QuotaRule):
                continue
            window = effective.window(context.timezone)
            q = await self.backend.quota_consume(
                key, effective.limit, window, now, n, overdraft=True
            )
            commits.append(
                QuotaCommit(
                    name=effective.name,
                    used=q.used,
                    limit=effective.limit,
                    reset_after=q.reset_after,
                    crossed=quota_threshold_crossed(q.used - n, q.used, effective.limit),
                )
            )
        return tuple(commits)

    async def refund_quota(
        self,
        limits: Iterable[RateRule | QuotaRule],
        context: RequestContext,
        consumed_at: float,
        n: int = 1,
    ) -> None:
        """Give back what :meth:`commit_quota` counted at ``consumed_at`` (e.g. a rollback)."""
        for effective, key in self.applicable(limits, context):
            if isinstance(effective.rule, QuotaRule):
                window = effective.window(context.timezone)
                await self.backend.quota_refund(key, window, consumed_at, n)

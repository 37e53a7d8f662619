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
from functools import cache
from typing import Literal, NamedTuple

from keel.guard.ratelimit.backend import (
    LimiterBackend,
    SlotClaim,
    SlotDecision,
)
from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.headers import quota_threshold_crossed
from keel.guard.ratelimit.policy import (
    EffectiveLimit,
    LimitOverride,
    Plan,
    QuotaRule,
    RateRule,
    effective_limit,
)
from keel.guard.ratelimit.quota import QuotaWindow, WindowPeriod

_new = tuple.__new__  # a named tuple without its Python-level __new__, as in gcra.py

_CACHE_BOUND = 4096
"""Entries each of the limiter's memo tables may hold before it starts afresh."""


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
        value: str | None = getattr(self, _SUBJECT_FIELDS[kind])
        return value


_SUBJECT_FIELDS = {"user": "user_id", "org": "org_id", "ip": "ip", "token": "token_id"}


class LimitResult(NamedTuple):
    """One rule's reading for one request, in the units headers need.

    ``quota`` and ``window`` are the policy's numbers (``q``/``w`` of
    RateLimit-Policy); ``remaining`` and ``reset_after`` the live ones
    (``r``/``t`` of RateLimit). A named tuple: built per rule per request.
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
        # Memo tables for the per-request work that depends only on the policy:
        # which rules a route matches, and each rule's numbers for a plan and
        # override. Keyed by identity (checked on hit, so a reused id never
        # aliases) and bounded; the policy and override objects are long-lived.
        self._matching: dict[tuple[int, str | None, str | None, bool], _Matched] = {}
        self._numbers: dict[tuple[int, str, int], _Numbers] = {}

    def applicable(
        self, limits: Iterable[RateRule | QuotaRule], context: RequestContext
    ) -> list[tuple[EffectiveLimit, str]]:
        """The rules covering this request, with enforced numbers and storage keys."""
        return [(numbers.effective, key) for numbers, key in self._applicable(limits, context)]

    def _applicable(
        self, limits: Iterable[RateRule | QuotaRule], context: RequestContext
    ) -> list[tuple[_Numbers, str]]:
        chosen: list[tuple[_Numbers, str]] = []
        overrides = context.overrides
        for rule in self._matching_rules(limits, context):
            subject = context.key_for(rule.key)
            if subject is None:
                continue
            numbers = self._numbers_for(rule, context.plan, overrides.get(rule.name))
            if numbers is None:
                continue
            chosen.append((numbers, f"{self._prefix}{rule.name}:{rule.key}:{subject}"))
        return chosen

    def _matching_rules(
        self, limits: Iterable[RateRule | QuotaRule], context: RequestContext
    ) -> tuple[RateRule | QuotaRule, ...]:
        anonymous = context.anonymous
        memo = None
        if isinstance(limits, tuple):  # a policy's rules: immutable, so memoisable
            memo = (id(limits), context.route, context.operation, anonymous)
            found = self._matching.get(memo)
            if found is not None and found.limits is limits:
                return found.rules
        rules = tuple(
            rule
            for rule in limits
            if rule.applies(route=context.route, operation=context.operation)
            and not (rule.principal == "anonymous" and not anonymous)
            and not (rule.principal == "authenticated" and anonymous)
        )
        if memo is not None:
            if len(self._matching) >= _CACHE_BOUND:
                self._matching.clear()
            self._matching[memo] = _Matched(limits, rules)
        return rules

    def _numbers_for(
        self, rule: RateRule | QuotaRule, plan: Plan, override: LimitOverride | None
    ) -> _Numbers | None:
        memo = (id(rule), plan, id(override))
        found = self._numbers.get(memo)
        if found is not None and found.rule is rule and found.override is override:
            return found
        effective = effective_limit(rule, plan, override)
        if effective is None:
            return None
        if isinstance(rule, RateRule):
            numbers = _Numbers(rule, override, effective, effective.rate, "day")
        else:
            numbers = _Numbers(rule, override, effective, None, rule.window)
        if len(self._numbers) >= _CACHE_BOUND:
            self._numbers.clear()
        self._numbers[memo] = numbers
        return numbers

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
        # Plain tuples throughout (the backend takes them as checks; LimitResult
        # is built without its keyword constructor): this runs on every request.
        quota_rules: list[tuple[_Numbers, str]] = []
        rate_rules: list[tuple[str, str, Rate]] = []
        quotas: list[tuple[str, int, QuotaWindow]] = []
        rates: list[tuple[str, Rate]] = []
        timezone = context.timezone
        for numbers, key in self._applicable(limits, context):
            rate = numbers.rate
            if rate is None:
                quota_rules.append((numbers, key))
                quotas.append((key, numbers.effective.limit, _window(numbers.period, timezone)))
            else:
                rate_rules.append((numbers.effective.name, key, rate))
                rates.append((key, rate))
        admission = await self.backend.admit(rates, quotas, slots, now, cost)
        results: list[LimitResult] = []
        for (numbers, key), q in zip(quota_rules, admission.quotas, strict=True):
            result = _new(
                LimitResult,
                (
                    numbers.effective.name,
                    "quota",
                    key,
                    q.allowed,
                    numbers.effective.limit,
                    q.window_end - q.window_start,
                    q.remaining,
                    q.reset_after,
                    q.retry_after,
                ),
            )
            results.append(result)
            if not q.allowed:
                return Decision(False, tuple(results), result, admission.slots)
        for (name, key, rate), g in zip(rate_rules, admission.rates, strict=True):
            result = _new(
                LimitResult,
                (
                    name,
                    "rate",
                    key,
                    g.allowed,
                    rate.limit,
                    rate.period,
                    g.remaining,
                    g.reset_after,
                    g.retry_after,
                ),
            )
            results.append(result)
            if not g.allowed:
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


class _Matched(NamedTuple):
    limits: object  # compared by identity only
    rules: tuple[RateRule | QuotaRule, ...]


class _Numbers(NamedTuple):
    """A rule's enforced numbers for a plan and override, with what a check needs."""

    rule: RateRule | QuotaRule
    override: LimitOverride | None
    effective: EffectiveLimit
    rate: Rate | None  # rate rules
    period: WindowPeriod  # quota rules (the rule's window; "day" is a placeholder otherwise)


@cache
def _window(period: WindowPeriod, timezone: str) -> QuotaWindow:
    return QuotaWindow(period, timezone)

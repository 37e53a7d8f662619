"""The limiter service: every applicable rule for a request, in one decision.

:class:`RateLimiter` is what the (future) ASGI middleware calls. It knows the
rules and the backend, nothing of HTTP: the request arrives as a
:class:`RequestContext` and leaves as a :class:`Decision`, which
:mod:`keel.guard.ratelimit.headers` turns into response headers.

:meth:`RateLimiter.decide` hands every applicable rule — and the request's
concurrency slots, when the caller asks for them — to the backend as one
all-or-nothing :meth:`~keel.guard.ratelimit.backend.LimiterBackend.admit`
(one Lua script call on Redis): rate cells are *spent*, quota units
*reserved* and slots *taken* only if nothing refuses. A request refused by
its org's limit has therefore spent nothing of its user's. Quotas count
successes, and a quota is a promise: the unit is reserved at the check, so
concurrent requests cannot pass the limit together, and the caller settles
the :class:`QuotaReservation` once the outcome is known — kept on success,
released (given back, exactly once) on failure. When several rules refuse,
the one reported is the first in policy order, quotas before rates, as a
client would hit them one by one.

Readings are in the units the headers report. A quota reads ``limit`` per
calendar window with ``remaining`` after this request's reservation. A rate
limit (GCRA) is a bucket of ``burst`` requests refilled one per
``period / limit`` seconds, and reads exactly so: ``burst`` per the time a
full refill takes, ``remaining`` what fits right now — so that ``quota -
remaining`` is the requests still counted against the caller (1 after a fresh
key's first request), never a figure mixing the long-run rate with the burst.
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
    RateLimit-Policy): a quota's limit and calendar window, a rate limit's
    burst and the seconds a full refill takes (see the module docstring).
    ``remaining`` and ``reset_after`` are the live ones (``r``/``t`` of
    RateLimit), after this request. A named tuple: built per rule per request.
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
    ``reservation`` holds the quota units an admitted request reserved
    (``None`` when no quota applied), for the caller to settle.
    """

    allowed: bool
    results: tuple[LimitResult, ...]
    breached: LimitResult | None = None
    slots: tuple[SlotDecision, ...] = ()
    reservation: QuotaReservation | None = None

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

    def unreserved(self) -> Decision:
        """The readings once the reservation is given back: what a failed request reports."""
        if self.reservation is None:
            return self
        n = self.reservation.n
        results = tuple(
            r._replace(remaining=min(r.quota, r.remaining + n)) if r.algorithm == "quota" else r
            for r in self.results
        )
        return Decision(self.allowed, results, self.breached, self.slots, None)


@dataclass(frozen=True, slots=True)
class QuotaCommit:
    """A quota unit kept after success, and the warning threshold it crossed, if any."""

    name: str
    used: int
    limit: int
    reset_after: float
    crossed: int | None


class ReservedQuota(NamedTuple):
    """One quota's share of a reservation: where it is counted, and the count with it."""

    name: str
    key: str
    window: QuotaWindow
    used: int
    limit: int
    reset_after: float


class QuotaReservation:
    """Quota units an admitted request holds until its outcome is known.

    The backend counted them at admission (so concurrent requests cannot
    overdraw the quota); the caller settles the reservation once: :meth:`keep`
    when the operation succeeded, :meth:`release` when it did not (an error
    response, an exception, a client gone). Settling is exactly-once: the
    state flips before the first ``await``, so a second settle — concurrent or
    not — does nothing and can never give back a unit twice.
    """

    __slots__ = ("_backend", "_settled", "n", "quotas", "reserved_at")

    def __init__(
        self,
        backend: LimiterBackend,
        quotas: tuple[ReservedQuota, ...],
        reserved_at: float,
        n: int,
    ) -> None:
        self._backend = backend
        self.quotas = quotas
        self.reserved_at = reserved_at
        self.n = n
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def keep(self) -> tuple[QuotaCommit, ...]:
        """The units stay counted; which 80/90/100 % warning each one crossed, once."""
        if self._settled:
            return ()
        self._settled = True
        n = self.n
        return tuple(
            QuotaCommit(
                name=q.name,
                used=q.used,
                limit=q.limit,
                reset_after=q.reset_after,
                crossed=quota_threshold_crossed(q.used - n, q.used, q.limit),
            )
            for q in self.quotas
        )

    async def release(self) -> bool:
        """Give the units back, in the windows they were reserved in; False if settled."""
        if self._settled:
            return False
        self._settled = True
        for q in self.quotas:
            await self._backend.quota_refund(q.key, q.window, self.reserved_at, self.n)
        return True


class RateLimiter:
    """Evaluates rules against a backend. One per application, shared by requests."""

    def __init__(self, backend: LimiterBackend, *, key_prefix: str = "") -> None:
        self.backend = backend
        self._prefix = key_prefix
        # Memo of the per-request work that depends only on the policy: which
        # rules a route matches, each with its key prefix and (in the entry)
        # its numbers per plan and override. Keyed by identity (checked on
        # hit, so a reused id never aliases) and bounded; the policy and
        # override objects are long-lived.
        self._matching: dict[tuple[int, str | None, str | None, bool], _Matched] = {}

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
        plan = context.plan
        for entry in self._matching_entries(limits, context):
            subject: str | None = getattr(context, entry.subject)
            if subject is None:
                continue
            override = overrides.get(entry.name) if overrides else None
            # The plan alone keys the common case (no override): no tuple to build.
            memo: object = plan if override is None else (plan, id(override))
            known = entry.numbers.get(memo)
            if known is None or known[0] is not override:
                known = entry.remember(memo, plan, override)
            numbers = known[1]
            if numbers is not None:
                chosen.append((numbers, entry.key_prefix + subject))
        return chosen

    def _matching_entries(
        self, limits: Iterable[RateRule | QuotaRule], context: RequestContext
    ) -> tuple[_Entry, ...]:
        anonymous = context.user_id is None
        memo = None
        if isinstance(limits, tuple):  # a policy's rules: immutable, so memoisable
            memo = (id(limits), context.route, context.operation, anonymous)
            found = self._matching.get(memo)
            if found is not None and found.limits is limits:
                return found.entries
        entries = tuple(
            _Entry(rule, self._prefix)
            for rule in limits
            if rule.applies(route=context.route, operation=context.operation)
            and not (rule.principal == "anonymous" and not anonymous)
            and not (rule.principal == "authenticated" and anonymous)
        )
        if memo is not None:
            if len(self._matching) >= _CACHE_BOUND:
                self._matching.clear()
            self._matching[memo] = _Matched(limits, entries)
        return entries

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

        One backend call: nothing is spent, reserved or taken unless
        everything fits. An admitted request with quotas carries a
        :class:`QuotaReservation` the caller must settle.
        """
        # Plain tuples throughout (the backend takes them as checks; LimitResult
        # is built without its keyword constructor): this runs on every request.
        chosen = self._applicable(limits, context)
        quota_rules: list[tuple[_Numbers, str]] = []
        rate_rules: list[tuple[_Numbers, str]] = []
        quotas: list[tuple[str, int, QuotaWindow]] = []
        rates: list[tuple[str, Rate]] = []
        timezone = context.timezone
        for numbers, key in chosen:
            rate = numbers.rate
            if rate is None:
                quota_rules.append((numbers, key))
                quotas.append((key, numbers.limit, _window(numbers.period, timezone)))
            else:
                rate_rules.append((numbers, key))
                rates.append((key, rate))
        admission = await self.backend.admit(rates, quotas, slots, now, cost)
        results: list[LimitResult] = []
        for (numbers, key), q in zip(quota_rules, admission.quotas, strict=True):
            result = LimitResult(
                numbers.name,
                "quota",
                key,
                q.allowed,
                numbers.limit,
                q.window_end - q.window_start,
                q.remaining,
                q.reset_after,
                q.retry_after,
            )
            results.append(result)
            if not q.allowed:
                return Decision(False, tuple(results), result, admission.slots)
        for (numbers, key), g in zip(rate_rules, admission.rates, strict=True):
            result = LimitResult(
                numbers.name,
                "rate",
                key,
                g.allowed,
                numbers.limit,
                numbers.window,
                g.remaining,
                g.reset_after,
                g.retry_after,
            )
            results.append(result)
            if not g.allowed:
                return Decision(False, tuple(results), result, admission.slots)
        reservation = None
        if quota_rules and admission.allowed and cost > 0:
            reservation = QuotaReservation(
                self.backend,
                tuple(
                    ReservedQuota(numbers.name, key, window, q.used, numbers.limit, q.reset_after)
                    for (numbers, key), (_, _, window), q in zip(
                        quota_rules, quotas, admission.quotas, strict=True
                    )
                ),
                now,
                cost,
            )
        return Decision(admission.allowed, tuple(results), None, admission.slots, reservation)


class _Numbers(NamedTuple):
    """A rule's enforced numbers for a plan and override, with what a check needs."""

    effective: EffectiveLimit
    name: str
    limit: int  # what RateLimit-Policy's q reports: a quota's limit, a rate's burst
    rate: Rate | None  # rate rules
    window: float  # rate rules: seconds a full refill takes (RateLimit-Policy's w)
    period: WindowPeriod  # quota rules (the rule's window; "day" is a placeholder otherwise)


class _Entry:
    """A rule that matched a route, with what every request through it needs.

    Built once per (policy, route, operation, principal kind): the field of
    :class:`RequestContext` holding the rule's subject, the storage key up to
    that subject, and the rule's numbers per plan and override, so that a
    request only reads its subject and joins one string.
    """

    __slots__ = ("key_prefix", "name", "numbers", "rule", "subject")

    def __init__(self, rule: RateRule | QuotaRule, prefix: str) -> None:
        self.rule = rule
        self.name = rule.name
        self.subject = _SUBJECT_FIELDS[rule.key]
        self.key_prefix = f"{prefix}{rule.name}:{rule.key}:"
        # plan, or (plan, id(override)) -> (override, numbers; None if disabled).
        # The override is kept to check identity on a hit.
        self.numbers: dict[object, tuple[LimitOverride | None, _Numbers | None]] = {}

    def remember(
        self, memo: object, plan: Plan, override: LimitOverride | None
    ) -> tuple[LimitOverride | None, _Numbers | None]:
        rule = self.rule
        effective = effective_limit(rule, plan, override)
        numbers = None
        if effective is not None:
            if isinstance(rule, RateRule):
                # Reported as the bucket GCRA keeps: burst per full refill.
                rate = effective.rate
                numbers = _Numbers(effective, rule.name, rate.burst, rate, rate.tolerance, "day")
            else:
                numbers = _Numbers(effective, rule.name, effective.limit, None, 0.0, rule.window)
        if len(self.numbers) >= _CACHE_BOUND:
            self.numbers.clear()
        known = self.numbers[memo] = (override, numbers)
        return known


class _Matched(NamedTuple):
    limits: object  # compared by identity only
    entries: tuple[_Entry, ...]


@cache
def _window(period: WindowPeriod, timezone: str) -> QuotaWindow:
    return QuotaWindow(period, timezone)

"""Limits on the request path, free of HTTP: rate limits, quotas and concurrency slots.

:class:`LimitGuard` holds what a decision needs and makes the parts of it
that are not HTTP: the limiter context of a request (user, org, plan, IP,
token, the org's time zone and overrides — scaled down while the org is
flagged noisy and the process is under pressure), the refusals (a rule's
429 with ``Retry-After``, or a full in-flight slot), the breach record, and
settling a quota reservation (kept on success, with its warning thresholds
and their hooks; released otherwise). The limiter makes one all-or-nothing
decision per request: rate limits spend a cell, quotas *reserve* a unit
(counted at the check, so concurrent requests — on any instance sharing
Redis — can never pass a quota together), and in-flight slots are leased, so
a crashed process cannot leak them. The ASGI step is :mod:`keel.http.limits`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from anyio import CancelScope
from prometheus_client import CollectorRegistry, Counter

from keel.clock import SYSTEM_CLOCK, Clock
from keel.domain.principal import Principal
from keel.guard.breaches import Breach, BreachRecorder
from keel.guard.noisy import NoisyNeighbourDetector
from keel.guard.overrides import OverrideCache
from keel.guard.ratelimit import (
    Decision,
    LimitExceeded,
    LimitOverride,
    Policy,
    QuotaCommit,
    QuotaReservation,
    QuotaRule,
    RateLimiter,
    RateRule,
    RequestContext,
    SlotClaim,
    quota_warning_headers,
    ratelimit_headers,
)
from keel.guard.shed import LoadShedder

log = structlog.get_logger(__name__)


class LimitMetrics:
    """The guard's refusal and warning counters on ``registry`` (``None``: registered
    nowhere)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.concurrency_refused = Counter(
            "keel_concurrency_refused_total",
            "Requests refused for lack of an in-flight slot.",
            ["scope"],
            registry=registry,
        )
        self.quota_warnings = Counter(
            "keel_quota_warnings_total",
            "Quota warning thresholds crossed.",
            ["limit", "threshold"],
            registry=registry,
        )


AUTH_FAILED = "auth.failed"

ThresholdHook = Callable[[RequestContext, QuotaCommit], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConcurrencyLimits:
    per_user: int = 20
    per_org: int = 200
    lease_seconds: float = 120.0


@dataclass
class LimitGuard:
    """Everything the middleware needs; built once by ``create_app``."""

    limiter: RateLimiter
    policy: Policy
    overrides: OverrideCache
    breaches: BreachRecorder
    noisy: NoisyNeighbourDetector
    shedder: LoadShedder | None = None
    concurrency: ConcurrencyLimits = field(default_factory=ConcurrencyLimits)
    pressure_threshold: float = 0.5
    clock: Clock = SYSTEM_CLOCK
    threshold_hooks: tuple[ThresholdHook, ...] = ()
    metrics: LimitMetrics = field(default_factory=LimitMetrics)

    @property
    def _auth_rules(self) -> list[RateRule | QuotaRule]:
        """Only rules that name failed authentications (not the catch-all ``*`` ones)."""
        return [rule for rule in self.policy.limits if AUTH_FAILED in rule.applies_to]

    def context(
        self, principal: Principal | None, route: str | None, operation: str | None, ip: str | None
    ) -> RequestContext:
        if principal is None:
            return RequestContext(route=route, operation=operation, ip=ip)
        overrides = self.overrides.for_org(principal.org_id)
        under_pressure = (
            self.shedder is not None and self.shedder.pressure >= self.pressure_threshold
        )
        factor = self.noisy.limit_factor(principal.org_id, under_pressure)
        if factor < 1.0:
            overrides = _scaled(overrides, self.policy, factor)
        return RequestContext(
            route=route,
            operation=operation,
            user_id=principal.user_id,
            org_id=principal.org_id,
            plan=principal.plan.value,
            ip=ip,
            token_id=principal.token_id,
            timezone=principal.org_timezone,
            overrides=overrides,
        )

    def record_breach(self, context: RequestContext, decision: Decision, now: datetime) -> None:
        breached = decision.breached
        if breached is None:
            return
        kind = breached.key.split(":")[-2] if breached.key.count(":") >= 2 else "unknown"
        self.breaches.record(
            Breach(
                occurred_at=now,
                limit_name=breached.name,
                key_kind=kind,
                org_id=context.org_id,
                user_id=context.user_id,
                ip=context.ip,
                retry_after=decision.retry_after,
            )
        )

    async def failed_authentication(self, ip: str | None) -> LimitExceeded | None:
        """Count a failed authentication for the IP; a refusal once it is over its limit."""
        if ip is None:
            return None
        context = RequestContext(operation=AUTH_FAILED, ip=ip)
        now = self.clock.now()
        decision = await self.limiter.decide(self._auth_rules, context, now.timestamp())
        if decision.allowed:
            return None
        self.record_breach(context, decision, now)
        return exceeded(decision)

    async def keep(self, context: RequestContext, reservation: QuotaReservation) -> dict[str, str]:
        """Keep a succeeded request's quota units; the warning headers of thresholds it crossed."""
        commits = reservation.keep()
        for commit in commits:
            if commit.crossed is not None:
                self.metrics.quota_warnings.labels(commit.name, str(commit.crossed)).inc()
                log.info(
                    "quota_threshold_crossed",
                    limit=commit.name,
                    threshold=commit.crossed,
                    used=commit.used,
                    quota=commit.limit,
                    org_id=context.org_id,
                )
                for hook in self.threshold_hooks:
                    try:
                        await hook(context, commit)
                    except Exception:  # a warning must never fail the request it rides on
                        log.exception("quota_threshold_hook_failed", limit=commit.name)
        return quota_warning_headers(commits)

    async def release_slots(self, slots: list[HeldSlot]) -> None:
        for slot in slots:
            await self.limiter.backend.slot_release(slot.key, slot.slot_id)


def _scaled(
    overrides: Mapping[str, LimitOverride], policy: Policy, factor: float
) -> dict[str, LimitOverride]:
    scaled: dict[str, LimitOverride] = {}
    for rule in policy.limits:
        existing = overrides.get(rule.name)
        if existing is not None and (not existing.enabled or existing.limit is not None):
            limit = existing.limit
            if limit is None:
                scaled[rule.name] = existing
                continue
            burst = existing.burst or limit
            scaled[rule.name] = LimitOverride(
                limit=max(1, int(limit * factor)), burst=max(1, int(burst * factor))
            )
            continue
        multiplier = (existing.multiplier if existing and existing.multiplier else 1.0) * factor
        scaled[rule.name] = LimitOverride(multiplier=multiplier)
    return scaled


def exceeded(decision: Decision) -> LimitExceeded:
    breached = decision.breached
    assert breached is not None
    return LimitExceeded(
        f"the '{breached.name}' limit is used up; it allows {breached.quota} per "
        f"{breached.window:g} s and resets in {math.ceil(breached.reset_after)} s",
        limit_name=breached.name,
        retry_after=decision.retry_after,
        headers=ratelimit_headers(decision),
        resets_in=math.ceil(breached.reset_after),
        quota=breached.quota,
        window_seconds=breached.window,
    )


def concurrency_exceeded(
    decision: Decision, claims: list[SlotClaim], scopes: list[str], metrics: LimitMetrics
) -> LimitExceeded:
    index = decision.refused_slot
    assert index is not None  # refused, and by no rule: a slot was full
    scope_name, limit = scopes[index], claims[index].limit
    metrics.concurrency_refused.labels(scope_name).inc()
    return LimitExceeded(
        f"too many requests in flight for this {scope_name} (at most {limit})",
        limit_name=f"concurrency-{scope_name}",
        retry_after=1.0,
    )


@dataclass(frozen=True, slots=True)
class HeldSlot:
    """An in-flight slot a request holds until its response is done."""

    key: str
    slot_id: str


def slot_claims(
    limits: ConcurrencyLimits, context: RequestContext
) -> tuple[list[SlotClaim], list[str]]:
    """The in-flight slots a request takes with its decision, and their scopes."""
    claims: list[SlotClaim] = []
    scopes: list[str] = []
    if context.user_id is not None:
        claims.append(
            SlotClaim(f"slots:user:{context.user_id}", limits.per_user, limits.lease_seconds)
        )
        scopes.append("user")
    if context.org_id is not None:
        claims.append(
            SlotClaim(f"slots:org:{context.org_id}", limits.per_org, limits.lease_seconds)
        )
        scopes.append("org")
    return claims, scopes


async def release(reservation: QuotaReservation) -> None:
    """Give the reserved units back; never fail the request over it."""
    # Shielded: a request being cancelled must still return what it reserved.
    with CancelScope(shield=True):
        try:
            await reservation.release()
        except Exception as exc:  # the unit stays counted: one lost beats an overdraft
            log.warning(
                "quota_release_failed",
                error=type(exc).__name__,
                limits=[q.name for q in reservation.quotas],
            )

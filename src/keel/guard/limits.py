"""The limits middleware: rate limits, quotas and concurrency slots on the request path.

It runs after authentication (it keys on the principal) and before
idempotency and the routes. For each ``/v1`` request it

1. resolves the route template and operation, and builds the limiter context
   (user, org, plan, IP, token, the org's time zone and overrides — scaled down
   while the org is flagged noisy and the process is under pressure);
2. asks the :class:`~keel.guard.ratelimit.RateLimiter` for one all-or-nothing
   decision (one Redis round trip): rate limits spend a cell, quotas
   *reserve* a unit (counted at the check, so concurrent requests — on any
   instance sharing Redis — can never pass a quota together), and an
   in-flight slot is taken for the user and for the organisation (leased, so
   a crashed process cannot leak them); if any of them refuses nothing is
   spent, reserved or taken. A rule's refusal answers 429 with
   ``Retry-After`` and is recorded as a breach (in batches, off the path); a
   full slot answers 429 naming the concurrency limit;
3. settles the quota reservation exactly once, since quotas count successes:
   a response starting with a 2xx that is not an idempotent replay keeps it
   (and adds ``Keel-Quota-Warning`` when 80/90/100 % is crossed); any other
   status, an exception, or a request that ends with no response (a client
   gone) releases it — before the response is sent, so a client that reads
   ``/v1/quotas`` after an error sees the unit back;
4. gives the slots back when the response is done;
5. adds the RateLimit and X-RateLimit header fields to every limited response,
   read after this request's reservation (the 10th of 10 says 0 remaining).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from anyio import CancelScope
from prometheus_client import Counter
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.api.problems import from_error
from keel.api.routing import RouteTable
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
from keel.observe.routes_info import ROUTE_TEMPLATE_STATE

log = structlog.get_logger(__name__)

CONCURRENCY_REFUSED = Counter(
    "keel_concurrency_refused_total", "Requests refused for lack of an in-flight slot.", ["scope"]
)
QUOTA_WARNINGS = Counter(
    "keel_quota_warnings_total", "Quota warning thresholds crossed.", ["limit", "threshold"]
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
    routes: RouteTable
    overrides: OverrideCache
    breaches: BreachRecorder
    noisy: NoisyNeighbourDetector
    shedder: LoadShedder | None = None
    concurrency: ConcurrencyLimits = field(default_factory=ConcurrencyLimits)
    pressure_threshold: float = 0.5
    clock: Clock = SYSTEM_CLOCK
    threshold_hooks: list[ThresholdHook] = field(default_factory=list)

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
        return _exceeded(decision)


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


def _exceeded(decision: Decision) -> LimitExceeded:
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


def _concurrency_exceeded(
    decision: Decision, claims: list[SlotClaim], scopes: list[str]
) -> LimitExceeded:
    index = decision.refused_slot
    assert index is not None  # refused, and by no rule: a slot was full
    scope_name, limit = scopes[index], claims[index].limit
    CONCURRENCY_REFUSED.labels(scope_name).inc()
    return LimitExceeded(
        f"too many requests in flight for this {scope_name} (at most {limit})",
        limit_name=f"concurrency-{scope_name}",
        retry_after=1.0,
    )


def client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, *, guard: LimitGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        guard = self.guard
        state = scope.setdefault("state", {})
        principal: Principal | None = state.get("principal")
        matched = guard.routes.match(scope["method"], scope["path"])
        route, operation = matched if matched else (None, None)
        if route is not None:
            state[ROUTE_TEMPLATE_STATE] = route.split(" ", 1)[1]
        context = guard.context(principal, route, operation, client_ip(scope))
        now = guard.clock.now()
        claims, scopes = self._slot_claims(context)
        decision = await guard.limiter.decide(
            guard.policy.limits, context, now.timestamp(), slots=claims
        )
        if not decision.allowed:
            if decision.breached is not None:
                guard.record_breach(context, decision, now)
                refusal = _exceeded(decision)
            else:
                refusal = _concurrency_exceeded(decision, claims, scopes)
            await from_error(refusal, scope["path"])(scope, receive, send)
            return
        headers = ratelimit_headers(decision)
        slots = [
            (claim.key, slot.slot_id)
            for claim, slot in zip(claims, decision.slots, strict=True)
            if slot.slot_id is not None
        ]
        reservation = decision.reservation

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: dict[str, str] = {}
                if reservation is not None and not reservation.settled:
                    status = int(message["status"])
                    if 200 <= status < 300 and not state.get("idempotent_replay"):
                        extra = await self._keep(context, reservation)
                    else:
                        await self._release(reservation)
                        # The unit is back: report the quota as it now stands.
                        extra = ratelimit_headers(decision.unreserved())
                response_headers = MutableHeaders(scope=message)
                for name, value in (headers | extra).items():
                    response_headers[name] = value
            await send(message)

        started = guard.clock.monotonic()
        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            if reservation is not None and not reservation.settled:
                # No response started: the route raised, or the client went away.
                await self._release(reservation)
            await self._release_slots(slots)
            if principal is not None:
                finished = guard.clock.monotonic()
                guard.noisy.record(principal.org_id, finished - started, finished)

    async def _release(self, reservation: QuotaReservation) -> None:
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

    async def _keep(self, context: RequestContext, reservation: QuotaReservation) -> dict[str, str]:
        guard = self.guard
        commits = reservation.keep()
        for commit in commits:
            if commit.crossed is not None:
                QUOTA_WARNINGS.labels(commit.name, str(commit.crossed)).inc()
                log.info(
                    "quota_threshold_crossed",
                    limit=commit.name,
                    threshold=commit.crossed,
                    used=commit.used,
                    quota=commit.limit,
                    org_id=context.org_id,
                )
                for hook in guard.threshold_hooks:
                    try:
                        await hook(context, commit)
                    except Exception:  # a warning must never fail the request it rides on
                        log.exception("quota_threshold_hook_failed", limit=commit.name)
        return quota_warning_headers(commits)

    def _slot_claims(self, context: RequestContext) -> tuple[list[SlotClaim], list[str]]:
        """The in-flight slots this request takes with its decision, and their scopes."""
        limits = self.guard.concurrency
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

    async def _release_slots(self, slots: list[tuple[str, str]]) -> None:
        for key, slot_id in slots:
            await self.guard.limiter.backend.slot_release(key, slot_id)

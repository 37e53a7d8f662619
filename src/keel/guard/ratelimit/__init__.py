"""Rate limits, calendar quotas and concurrency slots for Keel.

The pieces, each replaceable on its own (as in ``limits``: items, strategies,
storage):

* pure arithmetic — :func:`gcra` (generic cell rate algorithm) and
  :func:`window_bounds` / :func:`quota_decision` (calendar quotas in an IANA
  time zone). Time is always an argument.
* storage — the :class:`LimiterBackend` protocol, whose ``admit`` decides a
  request's every limit and slot at once, all or nothing; :class:`MemoryBackend`
  (one process), :class:`RedisBackend` (shared; one Lua script per decision)
  and :class:`FallbackBackend` (Redis, falling back to a local share of each
  limit when Redis is down; ``degraded`` for ``/ready``).
* policy — :func:`load_policy` / :func:`default_policy` read TOML into
  :class:`Policy`; :func:`effective_limit` applies plan and org override.
* service — :class:`RateLimiter` decides for a :class:`RequestContext`.
* headers — :func:`ratelimit_headers` & co. return plain ``dict[str, str]``.

How the middleware uses it::

    limiter = RateLimiter(FallbackBackend(RedisBackend.from_url(url), instances=4))
    policy = load_policy(settings.ratelimit_policy)          # at start-up

    ctx = RequestContext(route="POST /v1/recognitions", operation="recognitions.create",
                         user_id=..., org_id=..., plan="team", ip=..., token_id=...,
                         timezone=org.timezone, overrides=org_overrides)
    now = clock.now().timestamp()
    slots = [SlotClaim(f"slots:user:{user_id}", 20, 120.0)]  # optional, taken with the rest
    decision = await limiter.decide(policy.limits, ctx, now, slots=slots)
    headers = ratelimit_headers(decision)                    # on every response
    if not decision.allowed:                                 # nothing was spent anywhere
        raise LimitExceeded(limit_name=decision.breached.name,
                            retry_after=decision.retry_after, headers=headers)
    ...run the operation, then slot_release(key, slot_id) for each decision.slots...
    if decision.reservation is not None:                     # quota units reserved at admit
        if succeeded:
            headers |= quota_warning_headers(decision.reservation.keep())  # 80/90/100 %
        else:
            await decision.reservation.release()             # given back, exactly once

Concurrency slots can also be taken on their own, on the backend:
``slot_acquire(key, limit, lease, now)`` then ``slot_release(key, slot_id)``.
"""

from keel.guard.ratelimit.backend import (
    Admission,
    LimiterBackend,
    QuotaCheck,
    RateCheck,
    SlotClaim,
    SlotDecision,
)
from keel.guard.ratelimit.errors import LimiterUnavailable, LimitExceeded, PolicyError
from keel.guard.ratelimit.fallback import (
    Breaker,
    Cooldown,
    CooldownState,
    FallbackBackend,
    FallbackMetrics,
)
from keel.guard.ratelimit.gcra import GcraDecision, Rate, gcra
from keel.guard.ratelimit.headers import (
    WARNING_THRESHOLDS,
    policy_item,
    quota_threshold_crossed,
    quota_warning_headers,
    quota_warning_value,
    ratelimit_headers,
    ratelimit_item,
    retry_after,
)
from keel.guard.ratelimit.limiter import (
    Decision,
    LimitResult,
    QuotaCommit,
    QuotaReservation,
    RateLimiter,
    RequestContext,
    ReservedQuota,
)
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.policy import (
    EffectiveLimit,
    KeyKind,
    LimitOverride,
    LimitRule,
    Plan,
    PlanMultipliers,
    Policy,
    QuotaRule,
    RateRule,
    default_policy,
    effective_limit,
    load_policy,
    parse_policy,
    policy_from,
)
from keel.guard.ratelimit.quota import (
    QuotaDecision,
    QuotaWindow,
    WindowPeriod,
    quota_decision,
    window_bounds,
)
from keel.guard.ratelimit.redis_backend import RedisBackend

__all__ = [
    "WARNING_THRESHOLDS",
    "Admission",
    "Breaker",
    "Cooldown",
    "CooldownState",
    "Decision",
    "EffectiveLimit",
    "FallbackBackend",
    "FallbackMetrics",
    "GcraDecision",
    "KeyKind",
    "LimitExceeded",
    "LimitOverride",
    "LimitResult",
    "LimitRule",
    "LimiterBackend",
    "LimiterUnavailable",
    "MemoryBackend",
    "Plan",
    "PlanMultipliers",
    "Policy",
    "PolicyError",
    "QuotaCheck",
    "QuotaCommit",
    "QuotaDecision",
    "QuotaReservation",
    "QuotaRule",
    "QuotaWindow",
    "Rate",
    "RateCheck",
    "RateLimiter",
    "RateRule",
    "RedisBackend",
    "RequestContext",
    "ReservedQuota",
    "SlotClaim",
    "SlotDecision",
    "WindowPeriod",
    "default_policy",
    "effective_limit",
    "gcra",
    "load_policy",
    "parse_policy",
    "policy_from",
    "policy_item",
    "quota_decision",
    "quota_threshold_crossed",
    "quota_warning_headers",
    "quota_warning_value",
    "ratelimit_headers",
    "ratelimit_item",
    "retry_after",
    "window_bounds",
]

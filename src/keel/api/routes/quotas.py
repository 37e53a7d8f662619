"""/v1/quotas: the caller's and the organisation's usage against every limit.

Usage is what the limiter really holds, in the same units as the RateLimit
headers. A quota's ``used`` is its count in the current calendar window —
successes plus requests in flight, whose units are reserved until they
finish. A rate limit (GCRA) is a bucket of ``burst`` requests that refills
``limit`` per ``window_seconds``: its ``used`` is the requests still counted
against the bucket (it gives one back every ``window_seconds / limit``
seconds), ``remaining`` what fits right now, and ``used + remaining`` is the
burst. It is never ``limit`` minus a burst-bounded remaining, which read 91
of 120 "used" after a new user's first request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from keel.api.dependencies import CurrentPrincipal, QuotaParts
from keel.domain import evidence
from keel.guard.ratelimit import QuotaRule, RateLimiter, RateRule, RequestContext
from keel.http.problems import problem_responses

router = APIRouter(prefix="/v1/quotas", tags=["limits"])


class LimitUsage(BaseModel):
    name: str
    scope: Literal["user", "org", "ip", "token"]
    algorithm: Literal["rate", "quota"]
    limit: int
    window_seconds: float
    burst: int | None  # rate limits only
    used: int
    remaining: int
    resets_in_seconds: float
    applies_to: list[str]


class StorageUsage(BaseModel):
    quota_bytes: int | None
    used_bytes: int


class QuotaReport(BaseModel):
    limits: list[LimitUsage]
    storage: StorageUsage


async def usage(
    limiter: RateLimiter, rules: Sequence[RateRule | QuotaRule], context: RequestContext, now: float
) -> list[LimitUsage]:
    """Peek at every rule keyed on the caller (cost 0: nothing is consumed)."""
    report: list[LimitUsage] = []
    everywhere = [rule.model_copy(update={"applies_to": ("*",)}) for rule in rules]
    for effective, key in limiter.applicable(everywhere, context):
        rule = effective.rule
        burst: int | None = None
        if isinstance(rule, QuotaRule):
            window = effective.window(context.timezone)
            q = await limiter.backend.quota_check(key, effective.limit, window, now, 0)
            window_seconds, remaining, resets = (
                q.window_end - q.window_start,
                q.remaining,
                q.reset_after,
            )
            used = q.used
        else:
            rate = effective.rate
            g = await limiter.backend.gcra(key, rate, now, 0)
            window_seconds, remaining, resets = rule.period_seconds, g.remaining, g.reset_after
            burst = rate.burst
            used = rate.burst - g.remaining  # cells not yet replenished: requests, not arithmetic
        original = next(r for r in rules if r.name == rule.name)
        report.append(
            LimitUsage(
                name=rule.name,
                scope=rule.key,
                algorithm=rule.algorithm,
                limit=effective.limit,
                window_seconds=window_seconds,
                burst=burst,
                used=max(0, used),
                remaining=max(0, remaining),
                resets_in_seconds=round(resets, 3),
                applies_to=list(original.applies_to),
            )
        )
    return report


@router.get("", response_model=QuotaReport, responses=problem_responses(401, 429, 503))
async def my_quotas(principal: CurrentPrincipal, services: QuotaParts) -> QuotaReport:
    guard = services.limits.guard
    context = guard.context(principal, None, None, None)
    readings = await usage(
        guard.limiter, list(guard.policy.limits), context, guard.clock.now().timestamp()
    )
    quota = services.limits.storage_quota.limit_for(principal)
    async with services.database.query() as session:
        used = await evidence.bytes_used(session, principal.org_id)
    return QuotaReport(limits=readings, storage=StorageUsage(quota_bytes=quota, used_bytes=used))

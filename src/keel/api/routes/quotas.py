"""/v1/quotas: the caller's and the organisation's usage against every limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from keel.api.dependencies import AppServices, CurrentPrincipal
from keel.api.problems import problem_responses
from keel.domain import evidence
from keel.guard.ratelimit import QuotaRule, RateLimiter, RateRule, RequestContext

router = APIRouter(prefix="/v1/quotas", tags=["limits"])


class LimitUsage(BaseModel):
    name: str
    scope: Literal["user", "org", "ip", "token"]
    algorithm: Literal["rate", "quota"]
    limit: int
    window_seconds: float
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
        if isinstance(rule, QuotaRule):
            window = effective.window(context.timezone)
            q = await limiter.backend.quota_check(key, effective.limit, window, now, 0)
            window_seconds, remaining, resets = (
                q.window_end - q.window_start,
                q.remaining,
                q.reset_after,
            )
        else:
            g = await limiter.backend.gcra(key, effective.rate, now, 0)
            window_seconds, remaining, resets = rule.period_seconds, g.remaining, g.reset_after
        original = next(r for r in rules if r.name == rule.name)
        report.append(
            LimitUsage(
                name=rule.name,
                scope=rule.key,
                algorithm=rule.algorithm,
                limit=effective.limit,
                window_seconds=window_seconds,
                used=max(0, effective.limit - remaining),
                remaining=max(0, remaining),
                resets_in_seconds=round(resets, 3),
                applies_to=list(original.applies_to),
            )
        )
    return report


@router.get("", response_model=QuotaReport, responses=problem_responses(401, 429, 503))
async def my_quotas(principal: CurrentPrincipal, services: AppServices) -> QuotaReport:
    guard = services.limits.guard
    context = guard.context(principal, None, None, None)
    readings = await usage(
        guard.limiter, list(guard.policy.limits), context, guard.clock.now().timestamp()
    )
    quota = services.limits.storage_quota.limit_for(principal)
    async with services.database.read() as session:
        used = await evidence.bytes_used(session, principal.org_id)
    return QuotaReport(limits=readings, storage=StorageUsage(quota_bytes=quota, used_bytes=used))

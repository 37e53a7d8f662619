"""Audit and notification hooks of the guards: quota thresholds and reused idempotency keys.

A quota crossing a warning threshold gets an audit event and a webhook job.

The limits middleware sees the crossing (once per threshold per window, since
counts only grow within a window); this hook records ``quota.threshold_crossed``
on the organisation's audit chain and enqueues the ``quota.warning``
notification in the same short transaction, so the two never disagree. It runs
after the response has started, never inside the request's own transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from keel.audit import AuditEvent, Auditor, EventCode
from keel.clock import Clock
from keel.db.engine import Database
from keel.domain.principal import Principal
from keel.guard.limits import ThresholdHook
from keel.guard.ratelimit import QuotaCommit, RequestContext
from keel.jobs.notifications import enqueue_quota_warning

log = structlog.get_logger(__name__)


def quota_warning_hook(database: Database, audit: Auditor, clock: Clock) -> ThresholdHook:
    async def on_threshold(context: RequestContext, commit: QuotaCommit) -> None:
        if context.org_id is None or commit.crossed is None:
            return
        period = f"{commit.name}@{int(clock.now().timestamp() + commit.reset_after)}"
        event = AuditEvent(
            EventCode.QUOTA_THRESHOLD_CROSSED,
            org_id=context.org_id,
            actor_id=context.user_id,
            fields={
                "quota": commit.name,
                "threshold_percent": commit.crossed,
                "used": commit.used,
                "allowed": commit.limit,
                "period": period,
            },
        )
        async with database.write() as session:
            await audit.record(session, event)
            await enqueue_quota_warning(
                session,
                org_id=context.org_id,
                quota=f"{commit.name}:{commit.crossed}",
                used=commit.used,
                limit=commit.limit,
                period=period,
                clock=clock,
            )

    return on_threshold


def audit_key_mismatch(
    audit: Auditor,
) -> Callable[[Principal, str | None, str, str], Awaitable[None]]:
    """Record ``idempotency.key_mismatch`` when a key is reused for another request."""

    async def on_mismatch(principal: Principal, ip: str | None, method: str, route: str) -> None:
        event = AuditEvent(
            EventCode.IDEMPOTENCY_KEY_MISMATCH,
            org_id=principal.org_id,
            actor_id=principal.user_id,
            token_id=principal.token_id,
            ip=ip,
            fields={"method": method, "route": route, "reason": "fingerprint"},
        )
        try:
            await audit.record_now(event)
        except Exception:  # the 422 must go out even if the audit write fails
            log.exception("audit_key_mismatch_failed")

    return on_mismatch

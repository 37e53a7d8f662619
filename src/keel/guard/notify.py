"""What happens when a quota crosses a warning threshold: an audit event and a webhook job.

The limits middleware sees the crossing (once per threshold per window, since
counts only grow within a window); this hook records ``quota.threshold_crossed``
on the organisation's audit chain and enqueues the ``quota.warning``
notification in the same short transaction, so the two never disagree. It runs
after the response has started, never inside the request's own transaction.
"""

from __future__ import annotations

from keel.audit import AuditEvent, Auditor, EventCode
from keel.clock import Clock
from keel.db.engine import Database
from keel.guard.limits import ThresholdHook
from keel.guard.ratelimit import QuotaCommit, RequestContext
from keel.jobs.notifications import enqueue_quota_warning


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

"""Notification jobs: JSON POSTed to an organisation's webhook through httpx.

Contract (what a receiver sees)::

    POST <orgs.webhook_url>
    Content-Type: application/json
    Idempotency-Key: <job id>          # the same on every retry: dedupe on it
    Keel-Event: export.ready | quota.warning
    Keel-Delivery-Attempt: <n>

    {"id": "<job id>", "type": "export.ready", "org_id": "...",
     "occurred_at": "<ISO 8601>", "data": {...}}

``data`` for ``export.ready``: ``export_id``, ``format``, ``row_count``, ``size``.
``data`` for ``quota.warning``: ``quota`` (its name), ``used``, ``limit``,
``period`` (the quota window's key, e.g. ``2026-11-29``). Enqueue quota warnings
with :func:`enqueue_quota_warning`; its unique key makes one warning per org,
quota and period however often the threshold is crossed.

A 2xx answer is delivery. 408, 429 and 5xx answers and transport errors are
retried by the job's backoff; other 4xx answers are permanent (dead at once).
The webhook URL is read at delivery time; an organisation without one is
skipped. Calls use plain httpx with a timeout: the job's retries are the
retries (a circuit breaker wraps this call in a later change).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel import __version__
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.tables import Export, Org
from keel.jobs.errors import PermanentJobError
from keel.jobs.queue import enqueue
from keel.jobs.registry import JobContext, JobType
from keel.jobs.retry import RetryPolicy

log = structlog.get_logger(__name__)

EXPORT_READY_EVENT = "export.ready"
QUOTA_WARNING_EVENT = "quota.warning"
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class WebhookRejected(PermanentJobError):
    title = "Webhook rejected the notification"


class WebhookFailed(Exception):
    """A retryable delivery failure (5xx, 408, 429)."""


async def deliver(context: JobContext) -> None:
    """POST the notification in ``payload`` to the organisation's webhook."""
    resources = context.resources
    org_id = str(context.payload["org_id"])
    async with resources.database.read() as session:
        org = await session.get(Org, org_id)
    if org is None or not org.webhook_url:
        log.info("notification_skipped", job_id=context.job_id, org_id=org_id, reason="no webhook")
        return
    event = str(context.payload["event"])
    body = {
        "id": context.job_id,
        "type": event,
        "org_id": org_id,
        "occurred_at": context.payload.get("occurred_at"),
        "data": context.payload.get("data", {}),
    }
    response = await resources.http.post(
        org.webhook_url,
        json=body,
        headers={
            "Idempotency-Key": context.job_id,
            "Keel-Event": event,
            "Keel-Delivery-Attempt": str(context.attempt),
            "User-Agent": f"keel/{__version__}",
        },
        timeout=resources.settings.webhook_timeout_seconds,
        follow_redirects=False,
    )
    status = response.status_code
    if 200 <= status < 300:
        log.info("notification_delivered", job_id=context.job_id, event=event, status=status)
        return
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise WebhookFailed(f"webhook answered {status}")
    raise WebhookRejected(f"webhook answered {status}", status=status)


_POLICY = RetryPolicy(max_attempts=8, base_seconds=5.0, cap_seconds=900.0)
EXPORT_READY = JobType("notifications.export_ready", deliver, retry=_POLICY, timeout_seconds=60.0)
QUOTA_WARNING = JobType(
    "notifications.quota_warning", deliver, queue="critical", retry=_POLICY, timeout_seconds=60.0
)


def _payload(
    event: str, org_id: str, occurred_at: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "event": event,
        "org_id": org_id,
        "occurred_at": occurred_at.isoformat(),
        "data": data,
    }


async def enqueue_export_ready(
    session: AsyncSession, export: Export, *, clock: Clock = SYSTEM_CLOCK
) -> str:
    data = {
        "export_id": export.id,
        "format": export.format,
        "row_count": export.row_count,
        "size": export.size,
    }
    return await enqueue(
        session,
        EXPORT_READY,
        _payload(EXPORT_READY_EVENT, export.org_id, clock.now(), data),
        unique_key=f"export-ready:{export.id}",
        clock=clock,
    )


async def enqueue_quota_warning(
    session: AsyncSession,
    *,
    org_id: str,
    quota: str,
    used: int,
    limit: int,
    period: str,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """Queue a quota warning in the caller's transaction; once per (org, quota, period)."""
    data = {"quota": quota, "used": used, "limit": limit, "period": period}
    return await enqueue(
        session,
        QUOTA_WARNING,
        _payload(QUOTA_WARNING_EVENT, org_id, clock.now(), data),
        unique_key=f"quota-warning:{org_id}:{quota}:{period}",
        clock=clock,
    )


__all__ = [
    "EXPORT_READY",
    "QUOTA_WARNING",
    "WebhookFailed",
    "WebhookRejected",
    "deliver",
    "enqueue_export_ready",
    "enqueue_quota_warning",
]

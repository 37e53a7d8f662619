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

A 2xx answer is delivery. 408, 425, 429 and 5xx answers and transport errors
are failures; other 4xx answers are permanent (dead at once). The webhook URL is
read at delivery time; an organisation without one is skipped.

Every POST goes through the webhook host's own :class:`~keel.resilience.Dependency`
(``resources.webhooks``, one per host: one tenant's dead endpoint never opens
another's breaker), so it has a timeout, a bulkhead and a breaker. Because the
request carries ``Idempotency-Key``, the issue's rule allows retries inside the
call: a few short ones, honouring ``Retry-After``. When they give up, the job
fails this attempt and its own backoff (at least the host's ``Retry-After``)
takes over. When the host's breaker is open or its bulkhead full, nothing is
sent: the job is deferred (:class:`~keel.jobs.errors.JobDeferred`) for the
breaker's remaining wait without spending an attempt, and stays queued. A delivery
that did reach the host before the breaker refused its retry spends its attempt,
so a host that never comes back still ends its jobs dead, probe by probe.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel import __version__
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.tables import Export, Org
from keel.jobs.errors import JobDeferred, PermanentJobError
from keel.jobs.queue import enqueue
from keel.jobs.registry import JobContext, JobType
from keel.jobs.retry import RetryPolicy
from keel.resilience import BreakerOpen, BulkheadFull, DependencyFailed

log = structlog.get_logger(__name__)

EXPORT_READY_EVENT = "export.ready"
QUOTA_WARNING_EVENT = "quota.warning"
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class WebhookRejected(PermanentJobError):
    title = "Webhook rejected the notification"


class WebhookFailed(Exception):
    """A retryable delivery failure (5xx, 408, 425, 429), with the host's Retry-After."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def webhook_host(url: str) -> str:
    """The pool key of a webhook URL: its host, and its port when one is given.

    Per host rather than per organisation: the breaker protects Keel from a *server*,
    and organisations sharing a receiver (one integration platform) share its fate.
    """
    parsed = httpx.URL(url)
    host = parsed.host.lower() or "-"
    return f"{host}:{parsed.port}" if parsed.port is not None else host


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) in seconds, if usable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


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
    url = org.webhook_url
    headers = {
        "Idempotency-Key": context.job_id,  # what makes the retries below allowed
        "Keel-Event": event,
        "Keel-Delivery-Attempt": str(context.attempt),
        "User-Agent": f"keel/{__version__}",
    }

    sent = 0

    async def post() -> httpx.Response:
        nonlocal sent
        sent += 1
        response = await resources.http.post(
            url,
            json=body,
            headers=headers,
            timeout=resources.settings.webhook_timeout_seconds,
            follow_redirects=False,
        )
        status = response.status_code
        if status >= 500 or status in RETRYABLE_STATUSES:
            hint = retry_after_seconds(response.headers.get("Retry-After"), resources.clock.now())
            raise WebhookFailed(f"webhook answered {status}", retry_after=hint)
        return response

    host = webhook_host(url)
    try:
        response = await resources.webhooks.get(host).call(post, idempotent=True)
    except (BreakerOpen, BulkheadFull) as refused:
        if sent:
            # Refused on an in-call retry: this delivery did reach the host (and maybe
            # tripped its breaker), so the attempt is spent — else a dead host's probes
            # would be deferred for ever — and the job waits out the breaker.
            raise WebhookFailed(
                f"webhook host {host}: {refused.detail} after {sent} tries",
                retry_after=refused.retry_after,
            ) from refused
        raise JobDeferred(
            f"webhook host {host}: {refused.detail}", retry_after=refused.retry_after
        ) from refused
    except DependencyFailed as failed:
        cause = failed.__cause__
        if isinstance(cause, WebhookFailed):
            raise cause from None  # the host's own answer and Retry-After, for the job
        raise
    status = response.status_code
    if 200 <= status < 300:
        log.info("notification_delivered", job_id=context.job_id, notification=event, status=status)
        return
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

"""The periodic synthetic check: the same steps as ``keel synthetic run``, every minute.

Scheduled only when ``KEEL_SYNTHETIC_TARGET_URL`` names the service's own URL
(a worker cannot know it: behind a proxy or a load balancer it is not the
worker's address); ``KEEL_SYNTHETIC_TOKEN`` is the admin token it calls with.
A failing run is logged and counted (``keel_synthetic_checks_total``), which
is what the ``KeelSyntheticCheckFailing`` alert reads; the job itself succeeds,
since retrying a check only delays the next one.
"""

from __future__ import annotations

import structlog

from keel.jobs.registry import JobContext, JobType, Periodic
from keel.jobs.retry import RetryPolicy
from keel.synthetic.checks import run_checks

log = structlog.get_logger(__name__)


async def run_synthetic_check(context: JobContext) -> None:
    settings = context.resources.settings
    if settings.synthetic_target_url is None:
        log.info("synthetic_check_skipped", reason="KEEL_SYNTHETIC_TARGET_URL is not set")
        return
    token = settings.synthetic_token
    run = await run_checks(
        settings.synthetic_target_url,
        token.get_secret_value() if token is not None else None,
        timeout_seconds=settings.synthetic_timeout_seconds,
        metrics=context.resources.synthetic,
    )
    failed = [step.step for step in run.steps if not step.ok]
    if failed:
        details = {step.step: step.detail for step in run.steps if not step.ok}
        log.warning("synthetic_check_failed", failed=failed, details=details)
    else:
        log.info("synthetic_check_passed", seconds=round(sum(s.seconds for s in run.steps), 3))


SYNTHETIC_CHECK = JobType(
    "synthetic.check",
    run_synthetic_check,
    queue="default",
    retry=RetryPolicy(max_attempts=1),
    timeout_seconds=120.0,
)
SYNTHETIC_CHECK_SCHEDULE = Periodic("synthetic-check", "* * * * *", SYNTHETIC_CHECK.name)

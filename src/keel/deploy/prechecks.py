"""Pre-checks: what must hold before a release may take traffic.

A check is a small object with a ``name`` and an async ``run(deployment)``
that answers pass or fail with a reason; :func:`run_pre_checks` moves the
deployment into ``pre_checks``, runs each, and moves it on — to ``failed``
with the first failure's reason, else to ``awaiting_approval`` when the
environment's gate wants approvals, else straight to ``rolling``. A check that
raises counts as failed: a broken check must never wave a release through.

:class:`SchemaServable` is the check every deployment gets: the database's
schema must be at or below the release's migration head, since a release
cannot serve a schema migrated past what it knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from keel.db.engine import Database
from keel.deploy.migration_cycle import split_pending
from keel.deploy.states import DeploymentState
from keel.deploy.store import SYSTEM_ACTOR, Deployment, DeploymentStore
from keel.migrations.errors import UnknownRevision
from keel.migrations.lint import lint
from keel.migrations.options import RunnerOptions
from keel.migrations.runtime.dryrun import dry_run
from keel.migrations.runtime.plan import pending_kinds
from keel.migrations.runtime.schema import current_revision
from keel.migrations.script.graph import Scripts


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


class PreCheck(Protocol):
    name: str

    async def run(self, deployment: Deployment) -> CheckResult: ...


class SchemaServable:
    """The database's revision is the release's migration head or one of its ancestors."""

    name = "schema-servable"

    def __init__(self, database: Database, scripts: Scripts | None = None) -> None:
        self.database = database
        self.scripts = scripts or Scripts()

    async def run(self, deployment: Deployment) -> CheckResult:
        head = deployment.release.migration_head
        current = await current_revision(self.database)
        if current is None:
            return CheckResult(self.name, True, f"empty schema; the release migrates to {head}")
        try:
            reachable = {revision.revision for revision in self.scripts.applied(head)}
        except UnknownRevision:
            return CheckResult(
                self.name, False, f"the release's migration head {head} is not in these migrations"
            )
        if current in reachable:
            return CheckResult(self.name, True, f"schema at {current}, release head {head}")
        return CheckResult(
            self.name,
            False,
            f"schema at {current} is past or beside the release's head {head}: it cannot serve it",
        )


class MigrationsRehearsed:
    """The revisions the release would apply here pass ``keel migrate lint`` and a dry run.

    Only the pending ones (from the database's revision to the release's head):
    what already ran was checked when it ran. The dry run is ``keel migrate
    dry-run``'s (upgrade, downgrade, upgrade, all undone), so a revision that
    fails or cannot be rolled back is found before anything changes.
    """

    name = "migrations-rehearsed"

    def __init__(self, database: Database, options: RunnerOptions, *, use_squawk: bool = True):
        self.database = database
        self.options = options
        self.scripts = Scripts(options.script_location)
        self.use_squawk = use_squawk

    async def run(self, deployment: Deployment) -> CheckResult:
        head = deployment.release.migration_head
        current = await current_revision(self.database)
        pending = [revision.revision for revision in self.scripts.pending(current, head)]
        if not pending:
            return CheckResult(self.name, True, "no pending revisions")
        report = await asyncio.to_thread(
            lint,
            timeouts=self.options.timeouts,
            script_location=self.options.script_location,
            revisions=pending,
            use_squawk=self.use_squawk,
        )
        if not report.ok:
            findings = "; ".join(f"{f.revision} {f.rule}" for f in report.findings[:5])
            return CheckResult(self.name, False, f"lint: {findings}")
        await dry_run(self.database.url, target=head, options=self.options)
        return CheckResult(self.name, True, f"{', '.join(pending)} linted and rehearsed (dry run)")


class ExpandBeforeTraffic:
    """The pending revisions are expand ones, then contract ones — never expand after contract.

    Only expand revisions may run before traffic shifts (the old version keeps
    serving on the new schema); contract ones run after promotion, when no old
    code is left. An expand revision that follows a contract one cannot run
    before traffic without the contract one under it, so such a release is
    refused: ship the contract change in a later release.
    """

    name = "expand-before-traffic"

    def __init__(self, database: Database, *, script_location: Path | None = None) -> None:
        self.database = database
        self.script_location = script_location

    async def run(self, deployment: Deployment) -> CheckResult:
        current = await current_revision(self.database)
        kinds = await asyncio.to_thread(
            pending_kinds,
            current,
            target=deployment.release.migration_head,
            script_location=self.script_location,
        )
        plan = split_pending(kinds)
        if plan.refusal is not None:
            return CheckResult(self.name, False, plan.refusal)
        return CheckResult(
            self.name,
            True,
            f"before traffic: {', '.join(plan.before_traffic) or 'nothing'}; "
            f"after promotion: {', '.join(plan.after_promotion) or 'nothing'}",
        )


class SmokeTest:
    """``GET url`` on the new version (on its own port, before it takes traffic) answers 200."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self.name = f"smoke {url}"

    async def run(self, deployment: Deployment) -> CheckResult:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.url)
        except httpx.HTTPError as error:
            return CheckResult(self.name, False, f"no answer: {type(error).__name__}")
        ok = response.status_code == 200
        return CheckResult(self.name, ok, f"answered {response.status_code}")


async def run_pre_checks(
    store: DeploymentStore, deployment_id: str, checks: Sequence[PreCheck]
) -> tuple[Deployment, list[CheckResult]]:
    """Run ``checks`` and move the deployment on according to their results."""
    deployment = await store.move(deployment_id, DeploymentState.PRE_CHECKS, actor=SYSTEM_ACTOR)
    results: list[CheckResult] = []
    for item in checks:
        try:
            result = await item.run(deployment)
        except Exception as error:  # a crashing check fails the deployment
            result = CheckResult(
                item.name, False, f"the check raised {type(error).__name__}: {error}"
            )
        results.append(result)
        if not result.ok:
            failed = await store.move(
                deployment_id,
                DeploymentState.FAILED,
                actor=SYSTEM_ACTOR,
                reason=f"pre-check {result.name} failed: {result.detail}",
            )
            return failed, results
    if deployment.required_approvals > 0:
        target = DeploymentState.AWAITING_APPROVAL
        reason = f"pre-checks passed; {deployment.required_approvals} approval(s) required"
    else:
        target = DeploymentState.ROLLING
        reason = "pre-checks passed; no approval required"
    return await store.move(deployment_id, target, actor=SYSTEM_ACTOR, reason=reason), results

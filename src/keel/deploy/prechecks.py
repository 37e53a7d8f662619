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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from keel.db.engine import Database
from keel.deploy.states import DeploymentState
from keel.deploy.store import SYSTEM_ACTOR, Deployment, DeploymentStore
from keel.migrations.errors import UnknownRevision
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

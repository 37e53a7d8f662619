"""Deployments for the safe-deploy tests: a store, one already in ``rolling``, a fake router."""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.audit import build_auditor
from keel.db.engine import Database
from keel.deploy import DeploymentState, DeploymentStore, Release, Strategy
from keel.migrations import head_revision
from keel.settings import Settings

RELEASE = Release(version="2.0.0", git_sha="d" * 40, migration_head=head_revision() or "")


def deployment_store(database: Database, settings: Settings) -> DeploymentStore:
    return DeploymentStore(database, build_auditor(settings, database))


async def rolling_deployment(
    database: Database, settings: Settings, strategy: Strategy = Strategy.CANARY
) -> tuple[DeploymentStore, str]:
    """A prod deployment past its pre-checks and gate: what a rollout walks."""
    store = deployment_store(database, settings)
    deployment = await store.create(
        RELEASE,
        environment="prod",
        strategy=strategy,
        created_by="alice",
        required_approvals=0,
    )
    await store.move(deployment.id, DeploymentState.PRE_CHECKS, actor="keel")
    await store.move(deployment.id, DeploymentState.ROLLING, actor="keel")
    return store, deployment.id


async def walked_deployment(
    store: DeploymentStore,
    release: Release,
    target: DeploymentState = DeploymentState.PROMOTED,
) -> str:
    """A prod canary deployment of ``release`` moved along the happy path up to ``target``
    (pre_checks, rolling or promoted; its contract phase not started)."""
    deployment = await store.create(
        release,
        environment="prod",
        strategy=Strategy.CANARY,
        created_by="alice",
        required_approvals=0,
    )
    for state in (DeploymentState.PRE_CHECKS, DeploymentState.ROLLING, DeploymentState.PROMOTED):
        await store.move(deployment.id, state, actor="keel")
        if state is target:
            break
    return deployment.id


@dataclass
class RecordingRouter:
    """A traffic router that only records the splits it was told and whether it drained."""

    splits: list[int] = field(default_factory=list)
    drained: bool = False

    def split(self, canary_percent: int) -> None:
        self.splits.append(canary_percent)

    def drain_baseline(self) -> None:
        self.drained = True

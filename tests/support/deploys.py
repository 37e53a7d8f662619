"""Deployments for the safe-deploy tests: a store, one already in ``rolling``, a fake router,
an in-memory HAProxy runtime API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from keel.audit import build_auditor
from keel.db.engine import Database
from keel.deploy import DeploymentState, DeploymentStore, Release, Strategy
from keel.deploy.groups import VersionGroup
from keel.deploy.haproxy import MAX_WEIGHT, HAProxyCommandFailed
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


@dataclass
class FakeRuntimeApi:
    """HAProxy's runtime API over one backend, in memory: servers added and deleted, weights
    (every change kept in ``history``), drains; like HAProxy, a command naming a server it
    does not know fails. Every registered server is up, with no current session."""

    path: Path = Path("admin.sock")
    weights: dict[str, int] = field(default_factory=dict)
    drained: set[str] = field(default_factory=set)
    deleted: list[str] = field(default_factory=list)
    history: list[dict[str, int]] = field(default_factory=list)

    def command(self, text: str) -> str:
        words = text.split()
        server = next(word for word in words if word.startswith("versions/")).split("/", 1)[1]
        if words[:2] == ["add", "server"]:
            self.weights[server] = 0
            return "New server registered."
        if words[:2] == ["del", "server"]:
            if self.weights.pop(server, None) is None:
                return "No such server."
            self.deleted.append(server)
            return "Server deleted."
        return ""  # enable health|server, state maint

    def _known(self, server: str) -> None:
        if server not in self.weights:
            raise HAProxyCommandFailed(f"No such server {server}")

    def set_weight(self, server: str, weight: int) -> None:
        self._known(server)
        assert 0 <= weight <= MAX_WEIGHT
        self.weights[server] = weight
        self.history.append(dict(self.weights))

    def drain(self, server: str) -> None:
        self._known(server)
        self.drained.add(server)

    def ready(self, server: str) -> None:
        self._known(server)
        self.drained.discard(server)

    def sessions(self) -> dict[str, int]:
        return dict.fromkeys(self.weights, 0)

    def statuses(self) -> dict[str, str]:
        return dict.fromkeys(self.weights, "UP")

    def share(self, group: VersionGroup) -> float:
        """The group's share of new requests (its servers' weights over all of them)."""
        total = sum(self.weights.values())
        mine = sum(self.weights.get(server, 0) for server in group.server_names())
        return mine / total if total else 0.0

"""The migration cycle of a rollout: expand before traffic, contract after promotion.

Two releases serve one database while traffic shifts, so the schema must suit
both. Expand revisions (additive: the old release ignores what they add) run
once the pre-checks and the approval gate have passed and before any traffic
moves; contract revisions (drops, renames, new constraints: the old release
breaks on them) run only once the deployment is ``promoted``, when no old code
is left. Each run is a step of the deployment, in the audit log as
``migration.applied`` with the phase and ``via: deploy:<id>``; the contract run
is also the deployment's contract phase (running, applied or failed).

The cycle also bounds rollbacks: traffic may go back to the baseline release
only while the schema is one that release can serve — its own migration head,
or that head plus expand revisions only. Once a contract revision beyond the
baseline's head has run, a rollback is refused and the reason names it:
sending traffic back would fail every request that touches what it removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from keel.audit import AuditEvent, EventCode
from keel.deploy.errors import MigrationPhaseRefused, RollbackRefused
from keel.deploy.release import Release
from keel.deploy.states import ContractPhase, DeploymentState
from keel.deploy.store import SYSTEM_ACTOR, Deployment, DeploymentStore
from keel.errors import KeelError
from keel.migrations.errors import UnknownRevision
from keel.migrations.options import RunnerOptions
from keel.migrations.runtime.history import Action, Outcome
from keel.migrations.runtime.plan import pending_kinds
from keel.migrations.runtime.runner import RunResult, apply
from keel.migrations.runtime.schema import current_revision
from keel.migrations.script.graph import Kind, Scripts


class Phase(StrEnum):
    EXPAND = "expand"
    CONTRACT = "contract"


# Expand revisions run once the gate has opened (``rolling``), before the walk moves traffic.
EXPAND_STATES = frozenset({DeploymentState.ROLLING})


@dataclass(frozen=True, slots=True)
class CyclePlan:
    """Pending revisions split by when they may run.

    ``blocked`` are expand revisions that follow a contract one: they cannot
    run before traffic without it, so the release must wait for a later one.
    """

    before_traffic: tuple[str, ...]
    after_promotion: tuple[str, ...]
    blocked: tuple[str, ...] = ()
    first_contract: str | None = None
    pending: tuple[str, ...] = ()
    """Every pending revision, oldest first: what a contract run, up to the head, applies."""

    @property
    def refusal(self) -> str | None:
        """Why the release cannot follow the cycle (``None``: it can)."""
        if not self.blocked:
            return None
        return (
            f"expand revision(s) {', '.join(self.blocked)} come after contract revision "
            f"{self.first_contract}: they cannot run before traffic shifts"
        )


def split_pending(kinds: Sequence[tuple[str, Kind]]) -> CyclePlan:
    """Expand revisions up to the first contract one run before traffic; the rest after."""
    first = next((i for i, (_, kind) in enumerate(kinds) if kind is Kind.CONTRACT), len(kinds))
    later = kinds[first:]
    return CyclePlan(
        before_traffic=tuple(name for name, _ in kinds[:first]),
        after_promotion=tuple(name for name, kind in later if kind is Kind.CONTRACT),
        blocked=tuple(name for name, kind in later if kind is Kind.EXPAND),
        first_contract=later[0][0] if later else None,
        pending=tuple(name for name, _ in kinds),
    )


class MigrationCycle:
    """Runs a deployment's expand and contract phases and guards its rollbacks."""

    def __init__(self, store: DeploymentStore, options: RunnerOptions) -> None:
        self.store = store
        self.options = options
        self.scripts = Scripts(options.script_location)

    async def plan(self, deployment: Deployment) -> CyclePlan:
        current = await current_revision(self.store.database)
        kinds = await asyncio.to_thread(
            pending_kinds,
            current,
            target=deployment.release.migration_head,
            script_location=self.options.script_location,
        )
        return split_pending(kinds)

    async def expand(self, deployment_id: str) -> tuple[str, ...]:
        """Apply the expand revisions (before traffic shifts); returns those applied."""
        deployment = await self.store.get(deployment_id)
        if deployment.state not in EXPAND_STATES:
            raise MigrationPhaseRefused(
                f"deployment {deployment_id} is {deployment.state}: expand revisions run once "
                "it is rolling (pre-checks passed, gate open), before traffic shifts"
            )
        plan = await self.plan(deployment)
        if plan.refusal is not None:
            raise MigrationPhaseRefused(plan.refusal)
        if not plan.before_traffic:
            return ()
        return await self._apply(deployment, plan.before_traffic[-1], Phase.EXPAND)

    async def contract(self, deployment_id: str, *, actor: str = SYSTEM_ACTOR) -> tuple[str, ...]:
        """Apply the rest up to the release's head, once promoted; returns those applied.

        The run is the deployment's contract phase: ``running``, then ``applied`` (naming
        the revisions) or ``failed`` with the reason — the runner has already rolled the
        failing revision back, so running it again is safe once its cause is fixed.
        """
        deployment = await self.store.get(deployment_id)
        if deployment.state is not DeploymentState.PROMOTED:
            raise MigrationPhaseRefused(
                f"deployment {deployment_id} is {deployment.state}: contract revisions run only "
                "after promotion, when no old release serves traffic"
            )
        await self.store.move_contract(deployment_id, ContractPhase.RUNNING, actor=actor)
        try:
            applied = await self._apply(
                deployment, deployment.release.migration_head, Phase.CONTRACT
            )
        except Exception as error:
            detail = error.detail if isinstance(error, KeelError) else repr(error)
            await self.store.move_contract(
                deployment_id, ContractPhase.FAILED, actor=actor, reason=detail
            )
            raise
        reason = f"applied {', '.join(applied)}" if applied else "nothing to apply"
        await self.store.move_contract(
            deployment_id, ContractPhase.APPLIED, actor=actor, reason=reason
        )
        return applied

    async def _apply(self, deployment: Deployment, target: str, phase: Phase) -> tuple[str, ...]:
        result: RunResult = await apply(
            self.store.database.url, target=target, options=self.options
        )
        applied = tuple(
            step.revision
            for step in result.steps
            if step.revision and step.action is Action.UPGRADE and step.outcome is Outcome.APPLIED
        )
        previous = result.start_revision
        for revision in applied:
            await self.store.auditor.record_now(
                AuditEvent(
                    EventCode.MIGRATION_APPLIED,
                    fields={
                        "from_revision": previous,
                        "to_revision": revision,
                        "phase": phase.value,
                        "via": f"deploy:{deployment.id}",
                    },
                )
            )
            previous = revision
        return applied

    # --- rollbacks ------------------------------------------------------------------

    async def baseline(self, deployment: Deployment) -> Release | None:
        """The release traffic goes back to: the environment's last promoted one before it."""
        for earlier in await self.store.recent(environment=deployment.environment, limit=100):
            if (
                earlier.id != deployment.id
                and earlier.state is DeploymentState.PROMOTED
                and earlier.created_at <= deployment.created_at
            ):
                return earlier.release
        return None

    async def unservable_reason(self, release: Release) -> str | None:
        """Why the current schema cannot serve ``release`` (``None``: it can)."""
        current = await current_revision(self.store.database)
        head = release.migration_head
        if current is None or current == head:
            return None
        try:
            if head in {item.revision for item in self.scripts.applied(current)}:
                beyond = await asyncio.to_thread(
                    pending_kinds,
                    head,
                    target=current,
                    script_location=self.options.script_location,
                )
                contracts = [name for name, kind in beyond if kind is Kind.CONTRACT]
                if not contracts:
                    return None  # only expand revisions since: the old release ignores them
                return (
                    f"contract revision {', '.join(contracts)} ran after release "
                    f"{release.version}'s migration head {head}: the schema at {current} "
                    "cannot serve it"
                )
            if current in {item.revision for item in self.scripts.applied(head)}:
                return None  # the schema is behind the release: it migrates forward
        except UnknownRevision:
            pass
        return f"the schema at {current} is not on release {release.version}'s migrations ({head})"

    async def check_rollback(self, deployment_id: str) -> None:
        """Refuse (:class:`RollbackRefused`) a rollback to a baseline the schema left behind."""
        deployment = await self.store.get(deployment_id)
        baseline = await self.baseline(deployment)
        if baseline is None:
            return
        reason = await self.unservable_reason(baseline)
        if reason is not None:
            raise RollbackRefused(
                f"rollback of deployment {deployment_id} to release {baseline.version} "
                f"refused: {reason}"
            )

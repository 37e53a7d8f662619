"""What a deployment does once promoted: its contract phase, once nothing old serves.

Contract revisions (drops, renames, new constraints) break the release the
deployment replaced, so they run only after promotion *and* after every process
of the old version has stopped: a drained group still answering a straggler
would fail it against the contracted schema. The decision is pure
(:func:`decide`); :class:`ContractStep` gathers its inputs (the revisions
pending, the old processes still running) and leaves the outcome in the
deployment's contract phase, so ``keel deploy show`` says whether the schema
caught up with the release, and if not, why and what to run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from keel.deploy.groups import VersionGroup
from keel.deploy.migration_cycle import MigrationCycle
from keel.deploy.processes import is_ours
from keel.deploy.states import ContractPhase, IllegalTransition
from keel.deploy.store import SYSTEM_ACTOR, Deployment
from keel.errors import KeelError


class Action(StrEnum):
    NOTHING = "nothing"  # no revision pending: the phase is not recorded
    DEFER = "defer"  # left ``pending``, with the reason and the command to run later
    RUN = "run"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str | None = None


def decide(
    deployment_id: str,
    *,
    pending: Sequence[str] | None,
    deferred: bool,
    still_running: Sequence[int],
) -> Decision:
    """Whether a promoted deployment's contract revisions run now.

    ``pending`` is ``None`` when the plan could not be read (the schema is not on
    the release's migrations, the database did not answer): the run is attempted,
    so that its failure is recorded with the runner's own reason.
    """
    if pending is not None and not pending:
        return Decision(Action.NOTHING)
    later = f"run `keel deploy migrate {deployment_id} --phase contract`"
    named = f"{', '.join(pending)} pending" if pending else "contract revisions pending"
    if deferred:
        return Decision(Action.DEFER, f"{named}, deferred by the operator: {later}")
    if still_running:
        pids = ", ".join(str(pid) for pid in still_running)
        return Decision(
            Action.DEFER,
            f"{named}, not run: the old version still runs (pid {pids}); stop it, then {later}",
        )
    return Decision(Action.RUN)


@dataclass(frozen=True, slots=True)
class ContractStep:
    """Runs (or defers) a promoted deployment's contract phase on this machine.

    ``deferred`` is the operator's ``--no-contract``: the phase is left
    ``pending`` for a later ``keel deploy migrate ID --phase contract``.
    """

    cycle: MigrationCycle
    deferred: bool = False

    async def run(self, deployment: Deployment, retired: Sequence[VersionGroup]) -> Deployment:
        """``retired`` are the old version's groups, already drained and stopped."""
        store = self.cycle.store
        still_running = [
            process.pid for group in retired for process in group.processes if is_ours(process)
        ]
        pending: tuple[str, ...] | None
        try:
            pending = (await self.cycle.plan(deployment)).pending
        except KeelError:
            pending = None
        decision = decide(
            deployment.id, pending=pending, deferred=self.deferred, still_running=still_running
        )
        if decision.action is Action.DEFER:
            # An operator who ran the phase meanwhile has the last word.
            with contextlib.suppress(IllegalTransition):
                await store.move_contract(
                    deployment.id, ContractPhase.PENDING, actor=SYSTEM_ACTOR, reason=decision.reason
                )
        elif decision.action is Action.RUN:
            # A failure is the phase's ``failed`` with the reason; the release still serves.
            with contextlib.suppress(KeelError):
                await self.cycle.contract(deployment.id)
        return await store.get(deployment.id)

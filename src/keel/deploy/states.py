"""The life of a deployment as an explicit state machine: states, and one table of legal moves.

::

    created ──> pre_checks ──> awaiting_approval ──> rolling ──> promoted
       │            │  └──────────────────────────────^  │
       │            │        (no approval required)      │
       └────────────┴──────────── any active state ──────┴──> rolled_back | failed

A deployment is *active* until it reaches a terminal state (promoted, rolled
back, failed); the database allows one active deployment per environment
(a partial unique index on ``finished_at IS NULL``), so two operators can
never roll two releases into one environment at once. ``rolled_back`` is
reachable from every active state because an operator must be able to stop a
rollout at any moment; from ``created`` or ``pre_checks`` it means the
release never took traffic. The store checks every move against
:data:`TRANSITIONS`, so no code path can skip the approval gate.

A promoted deployment has a second, smaller machine: its **contract phase**
(:class:`ContractPhase`, the migrations that may run only once no old code
serves). It is apart from the first because it says nothing about traffic —
the release serves everything either way — and because it runs after the
deployment has ended, when the environment is already free for the next one::

    (none) ──> pending ──> running ──> applied
       │          ⟲           ^  └───> failed
       └──────────────────────┘   (and again from any phase: a re-run)
"""

from __future__ import annotations

from enum import StrEnum

from keel.errors import Conflict


class DeploymentState(StrEnum):
    CREATED = "created"
    PRE_CHECKS = "pre_checks"
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLING = "rolling"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


S = DeploymentState

TRANSITIONS: dict[DeploymentState, frozenset[DeploymentState]] = {
    S.CREATED: frozenset({S.PRE_CHECKS, S.ROLLED_BACK, S.FAILED}),
    S.PRE_CHECKS: frozenset({S.AWAITING_APPROVAL, S.ROLLING, S.ROLLED_BACK, S.FAILED}),
    S.AWAITING_APPROVAL: frozenset({S.ROLLING, S.ROLLED_BACK, S.FAILED}),
    S.ROLLING: frozenset({S.PROMOTED, S.ROLLED_BACK, S.FAILED}),
    S.PROMOTED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.FAILED: frozenset(),
}

TERMINAL = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
ACTIVE = frozenset(TRANSITIONS) - TERMINAL


class IllegalTransition(Conflict):
    """A deployment cannot move from its state to the one asked for."""

    title = "Illegal deployment state transition"


def can_move(source: DeploymentState, target: DeploymentState) -> bool:
    return target in TRANSITIONS[source]


def check(source: DeploymentState, target: DeploymentState) -> None:
    if not can_move(source, target):
        raise IllegalTransition(f"a deployment in {source} cannot move to {target}")


class ContractPhase(StrEnum):
    """Where a promoted deployment's contract revisions stand."""

    PENDING = "pending"  # not run yet: deferred, or old processes were still running
    RUNNING = "running"
    APPLIED = "applied"
    FAILED = "failed"  # the runner rolled the failing revision back; re-run it


C = ContractPhase

# ``None`` is a deployment whose contract phase never started. A phase may start
# again from every state by a new run: the migration runner's
# lock keeps two runs apart, and a run whose process died leaves ``running``, so an
# operator must be able to start it again from there too.
CONTRACT_TRANSITIONS: dict[ContractPhase | None, frozenset[ContractPhase]] = {
    None: frozenset({C.PENDING, C.RUNNING}),
    C.PENDING: frozenset({C.PENDING, C.RUNNING}),  # waiting again, maybe for a new reason
    C.RUNNING: frozenset({C.RUNNING, C.APPLIED, C.FAILED}),
    C.APPLIED: frozenset({C.RUNNING}),
    C.FAILED: frozenset({C.RUNNING}),
}

OUTSTANDING = frozenset({C.PENDING, C.RUNNING, C.FAILED})
"""Contract phases that still need an operator (or a run in progress)."""


def check_contract(source: ContractPhase | None, target: ContractPhase) -> None:
    if target not in CONTRACT_TRANSITIONS[source]:
        raise IllegalTransition(f"a contract phase in {source or 'none'} cannot move to {target}")

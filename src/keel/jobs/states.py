"""The life of a job as an explicit state machine: states, and one table of legal moves.

::

    scheduled ─┐
               ├─> ready ──> running ──> succeeded
    retrying ──┘     ^          │ ├────> retrying (backoff, attempts left)
                     │          │ └────> dead (attempts exhausted) ──requeue──> ready
                     └──────────┘ lease expired (worker died) or released on shutdown

A ``scheduled`` or ``retrying`` job whose ``run_at`` has passed is claimable as
it is: the claim moves it straight to ``running`` (the same move as through
``ready``), so no separate promotion write is needed. Queued jobs (scheduled,
ready, retrying) may be ``cancelled``. Every query that changes a job's state
takes its source states from :data:`TRANSITIONS`, so the SQL cannot drift from
this table.
"""

from __future__ import annotations

from enum import StrEnum

from keel.errors import Conflict


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    READY = "ready"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


S = JobState

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.SCHEDULED: frozenset({S.READY, S.RUNNING, S.CANCELLED}),
    S.READY: frozenset({S.RUNNING, S.CANCELLED}),
    S.RETRYING: frozenset({S.READY, S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.RETRYING, S.DEAD, S.READY}),
    S.DEAD: frozenset({S.READY}),
    S.SUCCEEDED: frozenset(),
    S.CANCELLED: frozenset(),
}

QUEUED = frozenset({S.SCHEDULED, S.READY, S.RETRYING})
"""Waiting to run: what a claim takes (once due) and what cancellation accepts."""

FINISHED = frozenset({S.SUCCEEDED, S.DEAD, S.CANCELLED})


class IllegalTransition(Conflict):
    """A job cannot move from its state to the one asked for."""

    title = "Illegal job state transition"


def can_move(source: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[source]


def sources_of(target: JobState) -> frozenset[JobState]:
    """Every state from which ``target`` may be reached."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)


def check(source: JobState, target: JobState) -> None:
    if not can_move(source, target):
        raise IllegalTransition(f"a {source} job cannot become {target}")


def source_states(target: JobState, among: frozenset[JobState]) -> list[str]:
    """The states in ``among`` that may move to ``target``; raises if one may not.

    Queries use it to build their ``WHERE state IN (…)`` from the table above.
    """
    for source in among:
        check(source, target)
    return sorted(among)

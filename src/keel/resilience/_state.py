"""The circuit breaker's states, its one table of legal transitions, and the event.

Kept apart from the breaker so the state machine can be read (and tested) as data:
:class:`Transition` *is* the table, as resilience4j's ``StateTransition`` is. A pair of
states missing from it is a bug in the caller, never a runtime condition to recover from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum

from keel.errors import KeelError


class BreakerState(StrEnum):
    """Where a breaker is; the three automatic states and three operator states."""

    CLOSED = "closed"
    """Calls pass; outcomes fill the sliding window; a bad window trips to OPEN."""
    OPEN = "open"
    """Calls are rejected until the wait in OPEN has elapsed."""
    HALF_OPEN = "half_open"
    """A bounded number of probe calls decide between CLOSED and OPEN."""
    DISABLED = "disabled"
    """Operator state: every call passes, nothing is recorded, nothing trips."""
    METRICS_ONLY = "metrics_only"
    """Operator state: outcomes are recorded and exported but the breaker never trips."""
    FORCED_OPEN = "forced_open"
    """Operator state: every call is rejected until an operator says otherwise."""

    @property
    def is_operator_state(self) -> bool:
        """Operator states change only by operator action, never by call outcomes."""
        return self in _OPERATOR_STATES


_OPERATOR_STATES = frozenset(
    {BreakerState.DISABLED, BreakerState.METRICS_ONLY, BreakerState.FORCED_OPEN}
)


@dataclass(frozen=True, slots=True)
class StateRules:
    """What a state does with calls — resilience4j's per-state objects, as one row of data.

    The breaker holds the row of its current state and asks it; nothing else about
    a state is cached, so a new state is one new row here.
    """

    permits_all: bool
    """Every call is let through without asking (no probes to count, no wait to check)."""
    records: bool
    """Outcomes fill the sliding window (and count toward the call metrics)."""
    trips: bool
    """A bad window opens the breaker."""


RULES: dict[BreakerState, StateRules] = {
    BreakerState.CLOSED: StateRules(permits_all=True, records=True, trips=True),
    BreakerState.OPEN: StateRules(permits_all=False, records=False, trips=False),
    BreakerState.HALF_OPEN: StateRules(permits_all=False, records=False, trips=False),
    BreakerState.DISABLED: StateRules(permits_all=True, records=False, trips=False),
    BreakerState.METRICS_ONLY: StateRules(permits_all=True, records=True, trips=False),
    BreakerState.FORCED_OPEN: StateRules(permits_all=False, records=False, trips=False),
}


class TransitionReason(StrEnum):
    """Why a transition happened, carried by the event and the shared record."""

    FAILURE_RATE_EXCEEDED = "failure_rate_exceeded"
    SLOW_CALL_RATE_EXCEEDED = "slow_call_rate_exceeded"
    WAIT_ELAPSED = "wait_elapsed"
    PROBES_SUCCEEDED = "probes_succeeded"
    PROBES_FAILED = "probes_failed"
    OPERATOR = "operator"
    RESET = "reset"
    REMOTE = "remote"
    """Adopted from the shared state store: another process made this transition."""


_C, _O, _H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
_D, _M, _F = BreakerState.DISABLED, BreakerState.METRICS_ONLY, BreakerState.FORCED_OPEN


class Transition(Enum):
    """Every legal ``(from, to)`` pair — the one transition table of the breaker.

    Automatic transitions are the four of the classic machine. Operators (and other
    processes, through the state store) may move any state to CLOSED or to an operator
    state; ``CLOSED_TO_CLOSED`` exists only for ``reset``, which clears the window.
    HALF_OPEN is never entered by an operator, and an operator state is never left for
    OPEN: probing is a local decision, and outcomes never override an operator.
    """

    # automatic
    CLOSED_TO_OPEN = (_C, _O)
    OPEN_TO_HALF_OPEN = (_O, _H)
    HALF_OPEN_TO_CLOSED = (_H, _C)
    HALF_OPEN_TO_OPEN = (_H, _O)
    # operator or remote: to CLOSED
    CLOSED_TO_CLOSED = (_C, _C)
    OPEN_TO_CLOSED = (_O, _C)
    DISABLED_TO_CLOSED = (_D, _C)
    METRICS_ONLY_TO_CLOSED = (_M, _C)
    FORCED_OPEN_TO_CLOSED = (_F, _C)
    # operator: to an operator state
    CLOSED_TO_FORCED_OPEN = (_C, _F)
    OPEN_TO_FORCED_OPEN = (_O, _F)
    HALF_OPEN_TO_FORCED_OPEN = (_H, _F)
    DISABLED_TO_FORCED_OPEN = (_D, _F)
    METRICS_ONLY_TO_FORCED_OPEN = (_M, _F)
    CLOSED_TO_DISABLED = (_C, _D)
    OPEN_TO_DISABLED = (_O, _D)
    HALF_OPEN_TO_DISABLED = (_H, _D)
    METRICS_ONLY_TO_DISABLED = (_M, _D)
    FORCED_OPEN_TO_DISABLED = (_F, _D)
    CLOSED_TO_METRICS_ONLY = (_C, _M)
    OPEN_TO_METRICS_ONLY = (_O, _M)
    HALF_OPEN_TO_METRICS_ONLY = (_H, _M)
    DISABLED_TO_METRICS_ONLY = (_D, _M)
    FORCED_OPEN_TO_METRICS_ONLY = (_F, _M)

    @property
    def from_state(self) -> BreakerState:
        return self.value[0]

    @property
    def to_state(self) -> BreakerState:
        return self.value[1]

    @classmethod
    def between(cls, from_state: BreakerState, to_state: BreakerState) -> Transition:
        """The table entry for a pair, or :class:`IllegalTransition`."""
        try:
            return _BY_PAIR[(from_state, to_state)]
        except KeyError:
            raise IllegalTransition(
                f"no transition from {from_state.value} to {to_state.value}",
                from_state=from_state.value,
                to_state=to_state.value,
            ) from None


_BY_PAIR: dict[tuple[BreakerState, BreakerState], Transition] = {t.value: t for t in Transition}


class IllegalTransition(KeelError):
    """A transition missing from :class:`Transition` was requested: a programming error."""

    slug = "illegal-breaker-transition"
    title = "Illegal circuit breaker transition"


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """Aggregates of a sliding window at one instant."""

    calls: int
    failed: int
    slow: int

    @property
    def failure_rate(self) -> float:
        """Share of failed calls in percent; 0 for an empty window."""
        return 100.0 * self.failed / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Share of slow calls (successful or not) in percent; 0 for an empty window."""
        return 100.0 * self.slow / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """The one event a breaker emits per state change; listeners and the audit log get it."""

    breaker: str
    transition: Transition
    reason: TransitionReason
    at: datetime
    """Wall-clock time of the change (``Clock.now()``), comparable across processes."""
    window: WindowSnapshot
    """The window as it was when the decision was taken (empty for operator changes)."""

    @property
    def from_state(self) -> BreakerState:
        return self.transition.from_state

    @property
    def to_state(self) -> BreakerState:
        return self.transition.to_state

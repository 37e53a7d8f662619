"""Breaker transitions into the audit log (``breaker.state_changed``, system chain).

A transition is delivered on the path of the call that caused it (``CircuitBreaker.flush``),
so the listener only *starts* the append, as a tracked background task: a request never
waits for the audit transaction, and an audit write failing (the database being the
dependency that just failed, say) is logged by the task runner, never raised.
"""

from __future__ import annotations

from keel.audit import AuditEvent, Auditor, EventCode
from keel.resilience._breaker import BreakerListener
from keel.resilience._state import BreakerTransition
from keel.tasks import BackgroundTasks


def audit_breaker_transitions(audit: Auditor, background: BackgroundTasks) -> BreakerListener:
    """A listener for ``services.dependencies.registry.add_listener``."""

    def listener(event: BreakerTransition) -> None:
        audit_event = AuditEvent(
            EventCode.BREAKER_STATE_CHANGED,
            fields={
                "breaker": event.breaker,
                "from_state": event.from_state.value,
                "to_state": event.to_state.value,
                "reason": event.reason.value,
            },
        )

        async def append() -> None:
            await audit.record_now(audit_event)

        background.start(f"audit:breaker:{event.breaker}", append)

    return listener

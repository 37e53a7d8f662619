"""Breaker transitions into the audit log (``breaker.state_changed``, system chain).

The breaker delivers a transition after the call that caused it (``CircuitBreaker.flush``),
so the append is bounded: a transition is rare (at most one per wait period), but the
call that caused it must not hang on an audit write — least of all when the database is
the dependency in trouble. A failed or timed-out append is logged and dropped (the
``breaker_state_changed`` log line and the metrics still record the transition); it never
fails the call.
"""

from __future__ import annotations

import asyncio

import structlog

from keel.audit import AuditEvent, Auditor, EventCode
from keel.resilience._breaker import BreakerListener
from keel.resilience._state import BreakerTransition

_log = structlog.get_logger("keel.resilience.auditing")


def audit_breaker_transitions(audit: Auditor, *, timeout: float = 1.0) -> BreakerListener:
    """A listener for ``services.dependencies.registry.add_listener``."""

    async def listener(event: BreakerTransition) -> None:
        audit_event = AuditEvent(
            EventCode.BREAKER_STATE_CHANGED,
            fields={
                "breaker": event.breaker,
                "from_state": event.from_state.value,
                "to_state": event.to_state.value,
                "reason": event.reason.value,
            },
        )
        try:
            async with asyncio.timeout(timeout):
                await audit.record_now(audit_event)
        except Exception as error:
            _log.warning("breaker_audit_failed", breaker=event.breaker, error=type(error).__name__)

    return listener

"""Fault injection: a release that is deliberately bad, to rehearse a rollback.

``KEEL_FAULT_ERROR_RATE`` makes that share of requests answer a 500
problem+json, and ``KEEL_FAULT_LATENCY_MS`` delays every request by that much
before it goes on — what a canary analysis must catch. Probes and
``/metrics`` are never faulted: the orchestrator must still see the version
as up and read its numbers, exactly as it would a real bad release. The
step sits inside the metrics step, so a faulted request is counted (status
500, the delay in its duration) like any other.

The errors are spread evenly rather than drawn at random: an accumulator
adds the rate per request and faults one whenever it passes 1, so any run of
``n`` requests holds ``rate·n`` faults, give or take one. A rehearsal then
fails or passes the same way every time.

Off by default, refused by the ``prod`` profile (``Settings.check_startable``)
and part of ``/version``'s settings fingerprint, so a faulted process cannot
pass for a healthy one in ``keel parity``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from keel.errors import KeelError
from keel.guard.shed import PROBE_PATHS
from keel.http.problems import from_error

Sleep = Callable[[float], Awaitable[None]]


class InjectedFault(KeelError):
    """The answer of a request the fault-injection setting chose to fail."""

    slug = "injected-fault"
    title = "Injected fault"


class FaultInjection:
    def __init__(
        self,
        app: ASGIApp,
        *,
        error_rate: float = 0.0,
        latency_seconds: float = 0.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("an error rate is between 0 and 1")
        if latency_seconds < 0:
            raise ValueError("a latency is not negative")
        self.app = app
        self.error_rate = error_rate
        self.latency_seconds = latency_seconds
        self.sleep = sleep
        self._owed = 0.0  # faults accrued and not yet answered

    def should_fail(self) -> bool:
        """Whether the next request is one of the ``error_rate`` share (evenly spread)."""
        self._owed += self.error_rate
        if self._owed >= 1.0 - 1e-9:
            self._owed -= 1.0
            return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if self.latency_seconds > 0:
            await self.sleep(self.latency_seconds)
        if self.should_fail():
            error = InjectedFault("this request was failed on purpose (KEEL_FAULT_ERROR_RATE)")
            await from_error(error, scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

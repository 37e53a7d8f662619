"""Where this process is in its life: starting, serving, draining.

Readiness reads it: a draining process answers ``/ready`` 503 at once so load
balancers stop sending it new work, while ``/live`` keeps answering 200 so no
orchestrator kills it before in-flight requests have finished.
"""

from __future__ import annotations

from keel.clock import Clock


class Lifecycle:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.started_at = clock.monotonic()
        self.draining = False

    def uptime_seconds(self) -> float:
        return max(0.0, self._clock.monotonic() - self.started_at)

    def begin_draining(self) -> None:
        self.draining = True

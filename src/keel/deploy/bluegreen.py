"""The blue-green switch: the new version takes all traffic in one move, the old stays warm.

The new version ("green") must answer its readiness probe (``/ready``) on its
own port before it gets a single request; it is polled every
``interval_seconds`` for at most ``ready_timeout_seconds``, and a version that
never becomes ready is rolled back without having served anyone. Then one
switch gives it 100 %. The old version keeps its processes for
``warm_seconds``: an operator's ``keel deploy rollback`` in that window moves
all traffic back at the next poll, to processes that are still running. When
the window ends the old version is drained and the deployment ``promoted``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import httpx

from keel.clock import SYSTEM_CLOCK, Clock
from keel.deploy.rollout import RolloutWalk, Sleep, TrafficRouter, WalkStopped
from keel.deploy.store import Deployment, DeploymentStore, Strategy


class ReadinessProbe(Protocol):
    async def ready(self) -> bool:
        """Whether the new version would serve traffic well now."""


class HttpReadiness:
    """``GET url`` answering 200 (Keel's ``/ready``)."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout

    async def ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                return (await client.get(self.url)).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass(frozen=True, slots=True)
class SwitchPlan:
    interval_seconds: float = 1.0
    ready_timeout_seconds: float = 60.0
    warm_seconds: float = 300.0


class BlueGreenSwitch(RolloutWalk):
    strategy = Strategy.BLUE_GREEN

    def __init__(
        self,
        store: DeploymentStore,
        deployment_id: str,
        router: TrafficRouter,
        *,
        probe: ReadinessProbe,
        plan: SwitchPlan,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(store, deployment_id, router)
        self.probe = probe
        self.plan = plan
        self.clock = clock
        self.sleep = sleep

    async def run(self) -> Deployment:
        """Probe, switch, keep the old version warm, promote; or roll back."""
        await self._start()
        try:
            await self._wait_ready()
            await self._shift(1, 100)
            switched = self.clock.monotonic()
            while self.clock.monotonic() - switched < self.plan.warm_seconds:
                await self.sleep(self.plan.interval_seconds)
                await self._still_rolling()
        except WalkStopped:
            return await self.store.get(self.deployment_id)
        return await self._promote(
            f"switched; the old version stayed warm {self.plan.warm_seconds:g} s, then drained"
        )

    async def _wait_ready(self) -> None:
        started = self.clock.monotonic()
        while not await self.probe.ready():
            if self.clock.monotonic() - started >= self.plan.ready_timeout_seconds:
                await self._roll_back(
                    f"the new version was not ready within {self.plan.ready_timeout_seconds:g} s"
                )
            await self.sleep(self.plan.interval_seconds)
            await self._still_rolling()

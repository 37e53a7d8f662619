"""The canary rollout: traffic steps with an analysis at each, and automatic rollback.

A deployment in ``rolling`` is walked through ``steps`` (5 → 25 → 50 → 100 %
by default). At each step the canary gets its share through the router
(HAProxy weights), and every ``interval_seconds`` both versions' ``/metrics``
are scraped and the traffic since the step began is analysed
(:mod:`keel.deploy.canary`):

* **pass** — on to the next step;
* **fail** — all traffic back to the baseline and the deployment
  ``rolled_back`` with the analysis' reasons, within one interval;
* **inconclusive** — wait for more traffic (optionally sending synthetic
  requests straight to each version to make up the shortfall), up to
  ``step_timeout_seconds``, then roll back: a canary is never promoted on no data.

At 100 % the baseline has no traffic to compare with, so the last analysis is
the step before; the baseline is then drained and the deployment
``promoted``. Before every step and every analysis the rollout re-reads the
deployment: an operator's ``keel deploy rollback`` in between sends all
traffic back to the baseline at the next poll. Time is injected (a clock and
a sleep), so the whole walk is testable on made-up time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import httpx

from keel.clock import SYSTEM_CLOCK, Clock
from keel.deploy.canary import Analysis, Thresholds, Traffic, Verdict, analyse, read_traffic
from keel.deploy.haproxy import RuntimeApi
from keel.deploy.states import DeploymentState, IllegalTransition
from keel.deploy.store import SYSTEM_ACTOR, Deployment, DeploymentStore, Strategy
from keel.errors import KeelError

Sleep = Callable[[float], Awaitable[None]]
Progress = Callable[[int, "Analysis | None"], None]
"""Told each new share (analysis ``None``) and each analysis at it, for a live view."""


class TrafficRouter(Protocol):
    def split(self, canary_percent: int) -> None:
        """Send ``canary_percent`` % of new requests to the canary, the rest to the baseline."""

    def drain_baseline(self) -> None:
        """No new requests to the baseline (its in-flight ones finish)."""


class MetricsSource(Protocol):
    async def scrape(self) -> str:
        """One version's ``/metrics`` text."""


class SyntheticTraffic(Protocol):
    async def send(self, *, canary: int, baseline: int) -> None:
        """Send this many requests straight to each version (their own ports, not the proxy)."""


class HttpSyntheticTraffic:
    """``GET`` a harmless user-facing URL of each version, so a quiet service still reaches
    the analysis' minimum sample instead of waiting into a rollback. Not a probe: probes
    (``slo="false"``) are left out of the analysis. For Keel an unauthenticated
    ``GET /v1/users/me`` does: a cheap 401 through the whole middleware stack."""

    def __init__(
        self, canary_url: str, baseline_url: str, *, most: int = 500, timeout: float = 5.0
    ) -> None:
        self.canary_url = canary_url
        self.baseline_url = baseline_url
        self.most = most
        self.timeout = timeout

    async def send(self, *, canary: int, baseline: int) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for url, count in ((self.canary_url, canary), (self.baseline_url, baseline)):
                for _ in range(min(count, self.most)):
                    try:
                        await client.get(url)
                    except httpx.HTTPError:
                        return  # the analysis will see what did not get through


class HAProxyRouter:
    """Weights of two servers of the HAProxy backend, out of 100.

    Of the two ``set weight`` commands, the one for the server taking the
    larger share goes first: a weight of 0 is only ever set after the other
    server has its 100, so the two are never both at 0 (every request would
    get a 503), whatever the weights were before — also after a restart.
    """

    def __init__(self, api: RuntimeApi, *, baseline: str = "baseline", canary: str = "canary"):
        self.api = api
        self.baseline = baseline
        self.canary = canary

    def split(self, canary_percent: int) -> None:
        if not 0 <= canary_percent <= 100:
            raise ValueError("a percentage is between 0 and 100")
        order = [(self.canary, canary_percent), (self.baseline, 100 - canary_percent)]
        for server, weight in order if canary_percent >= 50 else reversed(order):
            self.api.set_weight(server, weight)

    def drain_baseline(self) -> None:
        self.api.drain(self.baseline)


class HttpMetrics:
    """A version's ``/metrics`` over HTTP (all its processes share one multiprocess directory)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    async def scrape(self) -> str:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.get(self.url)
            response.raise_for_status()
            return response.text


@dataclass(frozen=True, slots=True)
class CanaryPlan:
    steps: tuple[int, ...] = (5, 25, 50, 100)
    interval_seconds: float = 30.0
    step_timeout_seconds: float = 300.0
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        if not self.steps or list(self.steps) != sorted(set(self.steps)):
            raise ValueError("steps must be increasing percentages")
        if self.steps[0] <= 0 or self.steps[-1] != 100:
            raise ValueError("steps start above 0 % and end at 100 %")


@dataclass(frozen=True, slots=True)
class StepRecord:
    percent: int
    analyses: tuple[Analysis, ...]


class WalkStopped(Exception):
    """The rollout ends early: rolled back (by the analysis or an operator)."""


class RolloutWalk:
    """What every strategy's walk shares: start only from ``rolling`` with the right strategy,
    notice an operator's rollback, and roll back by sending all traffic to the baseline."""

    strategy: Strategy
    progress: Progress | None = None

    def __init__(self, store: DeploymentStore, deployment_id: str, router: TrafficRouter) -> None:
        self.store = store
        self.deployment_id = deployment_id
        self.router = router

    async def _start(self) -> None:
        deployment = await self.store.get(self.deployment_id)
        if deployment.state is not DeploymentState.ROLLING:
            raise IllegalTransition(
                f"deployment {self.deployment_id} is {deployment.state}, not rolling"
            )
        if deployment.strategy is not self.strategy:
            raise IllegalTransition(
                f"deployment {self.deployment_id} is a {deployment.strategy} deployment, "
                f"not {self.strategy}"
            )

    async def _shift(self, step: int, percent: int) -> None:
        """Give the new version ``percent`` %, and audit it (unless it was rolled back)."""
        await self._still_rolling()
        self.router.split(percent)
        try:
            await self.store.record_step(self.deployment_id, step, percent)
        except IllegalTransition:  # rolled back between the check and the split
            self.router.split(0)
            raise WalkStopped from None
        if self.progress is not None:
            self.progress(percent, None)

    async def _promote(self, reason: str) -> Deployment:
        self.router.drain_baseline()
        return await self.store.move(
            self.deployment_id, DeploymentState.PROMOTED, actor=SYSTEM_ACTOR, reason=reason
        )

    async def _still_rolling(self) -> None:
        """Raise :class:`WalkStopped` (with all traffic on the baseline) once it is not rolling."""
        deployment = await self.store.get(self.deployment_id)
        if deployment.state is not DeploymentState.ROLLING:
            self.router.split(0)
            raise WalkStopped

    async def _roll_back(self, reason: str) -> NoReturn:
        self.router.split(0)
        # An operator may have ended it first; the traffic is back on the baseline either way.
        with contextlib.suppress(IllegalTransition):
            await self.store.move(
                self.deployment_id, DeploymentState.ROLLED_BACK, actor=SYSTEM_ACTOR, reason=reason
            )
        raise WalkStopped


class CanaryRollout(RolloutWalk):
    strategy = Strategy.CANARY

    def __init__(
        self,
        store: DeploymentStore,
        deployment_id: str,
        router: TrafficRouter,
        *,
        canary: MetricsSource,
        baseline: MetricsSource,
        plan: CanaryPlan,
        synthetic: SyntheticTraffic | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(store, deployment_id, router)
        self.canary = canary
        self.baseline = baseline
        self.plan = plan
        self.synthetic = synthetic
        self.clock = clock
        self.sleep = sleep
        self.steps: list[StepRecord] = []

    async def run(self) -> Deployment:
        """Walk the steps; returns the deployment, promoted or rolled back."""
        await self._start()
        try:
            for percent in self.plan.steps:
                await self._shift(len(self.steps) + 1, percent)
                if percent == 100:
                    break
                self.steps.append(StepRecord(percent, await self._analyse_step(percent)))
        except WalkStopped:
            return await self.store.get(self.deployment_id)
        last_analysed = self.plan.steps[-2] if len(self.plan.steps) > 1 else 100
        return await self._promote(f"canary passed every analysis up to {last_analysed} %")

    async def _analyse_step(self, percent: int) -> tuple[Analysis, ...]:
        started = self.clock.monotonic()
        before = await self._scrape_both(percent)
        analyses: list[Analysis] = []
        while True:
            await self.sleep(self.plan.interval_seconds)
            await self._still_rolling()
            after = await self._scrape_both(percent)
            result = analyse(
                after[0].since(before[0]), after[1].since(before[1]), self.plan.thresholds
            )
            analyses.append(result)
            if self.progress is not None:
                self.progress(percent, result)
            if result.verdict is Verdict.PASS:
                return tuple(analyses)
            if result.verdict is Verdict.FAIL:
                await self._roll_back(f"canary failed at {percent} %: " + "; ".join(result.reasons))
            if self.synthetic is not None:
                # Inconclusive: make up the shortfall before the next analysis.
                wanted = self.plan.thresholds.min_requests
                await self.synthetic.send(
                    canary=max(0, wanted - result.canary.requests),
                    baseline=max(0, wanted - result.baseline.requests),
                )
            if self.clock.monotonic() - started >= self.plan.step_timeout_seconds:
                await self._roll_back(
                    f"canary inconclusive at {percent} % for "
                    f"{self.plan.step_timeout_seconds:g} s: " + "; ".join(result.reasons)
                )

    async def _scrape_both(self, percent: int) -> tuple[Traffic, Traffic]:
        try:
            canary = read_traffic(await self.canary.scrape())
        except (httpx.HTTPError, KeelError, ValueError) as error:
            await self._roll_back(f"canary metrics unreadable at {percent} %: {error}")
        try:
            baseline = read_traffic(await self.baseline.scrape())
        except (httpx.HTTPError, KeelError, ValueError) as error:
            await self._roll_back(f"baseline metrics unreadable at {percent} %: {error}")
        return canary, baseline

"""The canary rollout on made-up time: fake routing and traffic, the real store and analysis.

Each "sleep" of the rollout sends 400 requests, split as the router says, to
two versions whose ``/metrics`` text comes from the server's own histogram.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest
from tests.support.deploys import RecordingRouter, deployment_store, rolling_deployment
from tests.support.versions import VersionServer

from keel.db.engine import Database
from keel.deploy import DeploymentState, DeploymentStore, Release, Strategy, Thresholds
from keel.deploy.canary import read_traffic
from keel.deploy.rollout import (
    CanaryPlan,
    CanaryRollout,
    HAProxyRouter,
    HttpMetrics,
    HttpSyntheticTraffic,
)
from keel.deploy.states import IllegalTransition
from keel.observe.metrics import Metrics
from keel.settings import Settings
from keel.testing import ManualClock

S = DeploymentState
PLAN = CanaryPlan(
    interval_seconds=10,
    step_timeout_seconds=60,
    thresholds=Thresholds(min_requests=50, max_p99_seconds=None),
)


@dataclass
class Version:
    latency: float
    error_share: float = 0.0
    metrics: Metrics = field(
        default_factory=lambda: Metrics(slo_threshold=0.3, version="1", release_id="r", git_sha="s")
    )
    served: int = 0

    def serve(self, count: int, rng: random.Random) -> None:
        for _ in range(count):
            self.served += 1
            failed = rng.random() < self.error_share
            seconds = max(0.0005, rng.gauss(self.latency, self.latency / 4))
            status = "500" if failed else "200"
            self.metrics.request_duration.labels("GET", "/v1/x", status, "true").observe(seconds)

    async def scrape(self) -> str:
        return generate_latest(self.metrics.registry).decode()


class World:
    def __init__(self, canary: Version, *, per_interval: int = 400) -> None:
        self.clock = ManualClock()
        self.router = RecordingRouter()
        self.baseline = Version(latency=0.05)
        self.canary = canary
        self.per_interval = per_interval
        self.rng = random.Random(11)
        self.on_sleep: list[object] = []

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        percent = self.router.splits[-1] if self.router.splits else 0
        to_canary = self.per_interval * percent // 100
        self.canary.serve(to_canary, self.rng)
        self.baseline.serve(self.per_interval - to_canary, self.rng)


def _rollout(store: DeploymentStore, deployment_id: str, world: World) -> CanaryRollout:
    return CanaryRollout(
        store,
        deployment_id,
        world.router,
        canary=world.canary,
        baseline=world.baseline,
        plan=PLAN,
        clock=world.clock,
        sleep=world.sleep,
    )


async def test_a_healthy_canary_walks_every_step_and_is_promoted(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    world = World(Version(latency=0.05))
    rollout = _rollout(store, deployment_id, world)
    deployment = await rollout.run()
    assert deployment.state is S.PROMOTED
    assert world.router.splits == [5, 25, 50, 100]
    assert world.router.drained
    assert [step.analyses[-1].verdict.value for step in rollout.steps] == ["pass"] * 3


async def test_a_canary_with_five_percent_errors_is_rolled_back_at_the_first_step(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    world = World(Version(latency=0.05, error_share=0.05))
    deployment = await _rollout(store, deployment_id, world).run()
    assert deployment.state is S.ROLLED_BACK
    assert "error rate" in (deployment.reason or "")
    assert world.router.splits == [5, 0]
    assert not world.router.drained
    # It needed the minimum sample first, and no more than one interval past it.
    assert world.canary.served < PLAN.thresholds.min_requests + 2 * 20


async def test_a_canary_two_hundred_ms_slower_is_rolled_back(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    world = World(Version(latency=0.25))
    deployment = await _rollout(store, deployment_id, world).run()
    assert deployment.state is S.ROLLED_BACK
    assert "Mann-Whitney" in (deployment.reason or "")
    assert world.router.splits[-1] == 0


async def test_a_canary_without_traffic_is_never_promoted_and_times_out_into_rollback(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    world = World(Version(latency=0.05), per_interval=10)
    deployment = await _rollout(store, deployment_id, world).run()
    assert deployment.state is S.ROLLED_BACK
    assert "inconclusive" in (deployment.reason or "")
    assert world.router.splits == [5, 0]
    assert world.clock.monotonic() - 1000.0 >= PLAN.step_timeout_seconds


async def test_an_operator_rollback_during_the_canary_restores_all_traffic_to_the_baseline(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    world = World(Version(latency=0.05))
    plain_sleep = world.sleep

    async def sleep_then_operator(seconds: float) -> None:
        await plain_sleep(seconds)
        if world.router.splits[-1] == 25:
            await store.move(deployment_id, S.ROLLED_BACK, actor="bob", reason="not today")

    world.sleep = sleep_then_operator  # type: ignore[method-assign]
    deployment = await _rollout(store, deployment_id, world).run()
    assert (deployment.state, deployment.reason) == (S.ROLLED_BACK, "not today")
    assert world.router.splits == [5, 25, 0]


async def test_only_a_rolling_deployment_can_be_walked(
    database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    waiting = await store.create(
        Release("2.0.0", "e" * 40, "0014"),
        environment="prod",
        strategy=Strategy.CANARY,
        created_by="alice",
        required_approvals=1,
    )
    world = World(Version(latency=0.05))
    with pytest.raises(IllegalTransition):
        await _rollout(store, waiting.id, world).run()
    assert world.router.splits == []


class RecordingApi:
    def __init__(self) -> None:
        self.weights = {"baseline": 100, "canary": 0}
        self.both_zero = False

    def set_weight(self, server: str, weight: int) -> None:
        self.weights[server] = weight
        self.both_zero = self.both_zero or not any(self.weights.values())

    def drain(self, server: str) -> None:
        return None


@pytest.mark.parametrize("path", [[5, 25, 50, 100, 0], [100, 0], [0, 100, 50, 0], [50, 0, 100]])
def test_the_haproxy_router_never_leaves_both_versions_at_zero(path: list[int]) -> None:
    api = RecordingApi()
    router = HAProxyRouter(api)  # type: ignore[arg-type]
    for percent in path:
        router.split(percent)
        assert api.weights == {"canary": percent, "baseline": 100 - percent}
    assert not api.both_zero


async def test_synthetic_traffic_turns_a_quiet_inconclusive_canary_into_a_verdict(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    world = World(Version(latency=0.05), per_interval=10)
    sent: list[tuple[int, int]] = []

    class Synthetic:
        async def send(self, *, canary: int, baseline: int) -> None:
            sent.append((canary, baseline))
            world.canary.serve(canary, world.rng)
            world.baseline.serve(baseline, world.rng)

    rollout = CanaryRollout(
        store,
        deployment_id,
        world.router,
        canary=world.canary,
        baseline=world.baseline,
        plan=PLAN,
        synthetic=Synthetic(),
        clock=world.clock,
        sleep=world.sleep,
    )
    deployment = await rollout.run()
    assert deployment.state is S.PROMOTED, deployment.reason
    assert sent  # it was needed: 10 requests an interval never reach the minimum of 50
    assert all(canary <= PLAN.thresholds.min_requests for canary, _ in sent)


async def test_http_synthetic_traffic_reaches_each_version_as_counted_user_traffic() -> None:
    with VersionServer("canary") as canary, VersionServer("baseline") as baseline:
        synthetic = HttpSyntheticTraffic(
            f"http://127.0.0.1:{canary.port}/v1/x", f"http://127.0.0.1:{baseline.port}/v1/x"
        )
        await synthetic.send(canary=3, baseline=2)
        counted = [
            read_traffic(await HttpMetrics(f"http://127.0.0.1:{v.port}/metrics").scrape()).requests
            for v in (canary, baseline)
        ]
    assert counted == [3, 2]

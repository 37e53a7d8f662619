"""The blue-green switch on made-up time (fake router and probe, the real store), and once
behind real HAProxy with a steady client: the switch drops zero requests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from tests.support.deploys import RecordingRouter, rolling_deployment
from tests.support.services import need_binary
from tests.support.versions import SteadyClient, VersionServer, behind_haproxy

from keel.db.engine import Database
from keel.deploy import DeploymentState, DeploymentStore, Strategy
from keel.deploy.bluegreen import BlueGreenSwitch, HttpReadiness, SwitchPlan
from keel.deploy.rollout import CanaryPlan, CanaryRollout, HAProxyRouter, HttpMetrics
from keel.deploy.states import IllegalTransition
from keel.settings import Settings
from keel.testing import ManualClock

S = DeploymentState
PLAN = SwitchPlan(interval_seconds=1, ready_timeout_seconds=5, warm_seconds=30)


@dataclass
class Probe:
    ready_after: int  # polls answered "not ready" first
    polls: int = 0

    async def ready(self) -> bool:
        self.polls += 1
        return self.polls > self.ready_after


def _switch(
    store: DeploymentStore,
    deployment_id: str,
    probe: Probe,
    clock: ManualClock,
    router: RecordingRouter,
) -> BlueGreenSwitch:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return BlueGreenSwitch(
        store,
        deployment_id,
        router,
        probe=probe,
        plan=PLAN,
        clock=clock,
        sleep=sleep,
    )


async def test_a_ready_version_takes_everything_in_one_switch_and_the_old_stays_warm(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings, Strategy.BLUE_GREEN)
    clock, router = ManualClock(), RecordingRouter()
    deployment = await _switch(store, deployment_id, Probe(ready_after=2), clock, router).run()
    assert deployment.state is S.PROMOTED
    assert router.splits == [100]
    assert router.drained
    assert clock.monotonic() - 1000.0 >= 2 + PLAN.warm_seconds


async def test_a_version_that_never_becomes_ready_is_rolled_back_without_traffic(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings, Strategy.BLUE_GREEN)
    router = RecordingRouter()
    switch = _switch(store, deployment_id, Probe(ready_after=10**6), ManualClock(), router)
    deployment = await switch.run()
    assert deployment.state is S.ROLLED_BACK
    assert "not ready" in (deployment.reason or "")
    assert 100 not in router.splits
    assert not router.drained


async def test_a_rollback_while_the_old_version_is_warm_sends_everything_back(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings, Strategy.BLUE_GREEN)
    clock, router = ManualClock(), RecordingRouter()
    switch = _switch(store, deployment_id, Probe(ready_after=0), clock, router)

    async def sleep_then_operator(seconds: float) -> None:
        clock.advance(seconds)
        if clock.monotonic() - 1000.0 >= 10:
            await store.move(deployment_id, S.ROLLED_BACK, actor="bob", reason="instant")

    switch.sleep = sleep_then_operator
    deployment = await switch.run()
    assert (deployment.state, deployment.reason) == (S.ROLLED_BACK, "instant")
    assert router.splits == [100, 0]
    assert not router.drained


async def test_each_walk_refuses_a_deployment_of_the_other_strategy(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings, Strategy.BLUE_GREEN)
    router = RecordingRouter()
    canary = CanaryRollout(
        store,
        deployment_id,
        router,
        canary=HttpMetrics("http://127.0.0.1:9/metrics"),
        baseline=HttpMetrics("http://127.0.0.1:9/metrics"),
        plan=CanaryPlan(),
    )
    with pytest.raises(IllegalTransition, match="blue-green"):
        await canary.run()
    assert router.splits == []


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite"])  # the store's backend does not matter here
async def test_a_blue_green_switch_behind_real_haproxy_drops_zero_requests(
    database: Database, settings: Settings
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    store, deployment_id = await rolling_deployment(database, settings, Strategy.BLUE_GREEN)
    with (
        VersionServer("green") as green,
        VersionServer("blue") as blue,
        behind_haproxy(baseline=blue, canary=green) as proxy,
        SteadyClient(proxy.bind[1]) as client,
    ):
        assert set(client.wait_for(30)) == {"blue"}
        switch = BlueGreenSwitch(
            store,
            deployment_id,
            HAProxyRouter(proxy.api),
            probe=HttpReadiness(f"http://127.0.0.1:{green.port}/ready"),
            plan=SwitchPlan(interval_seconds=0.2, ready_timeout_seconds=10, warm_seconds=1),
        )
        deployment = await switch.run()
        client.wait_for(2)
        assert set(client.wait_for(30)) == {"green"}
        assert proxy.api.sessions()["baseline"] == 0
    assert deployment.state is S.PROMOTED
    assert client.failures == []

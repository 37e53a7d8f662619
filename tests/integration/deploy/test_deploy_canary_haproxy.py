"""The whole canary on one machine: real HAProxy, two versions exposing the server's request
histogram, a steady client, the real store, analysis and router. A healthy canary is promoted
with zero failed requests; one answering 5 % errors is rolled back and the client barely
notices."""

from __future__ import annotations

import pytest
from tests.support.deploys import rolling_deployment
from tests.support.services import need_binary
from tests.support.versions import SteadyClient, VersionServer, behind_haproxy

from keel.db.engine import Database
from keel.deploy import DeploymentState, Thresholds
from keel.deploy.haproxy import RuntimeApi
from keel.deploy.rollout import CanaryPlan, CanaryRollout, HAProxyRouter, HttpMetrics
from keel.settings import Settings

pytestmark = pytest.mark.e2e

S = DeploymentState
PLAN = CanaryPlan(
    interval_seconds=0.5,
    step_timeout_seconds=30,
    # Two identical versions on a busy machine differ by scheduling noise only: the latency
    # test asks for overwhelming evidence here (a 200 ms slower canary would still fail it).
    thresholds=Thresholds(min_requests=20, max_error_rate=0.02, latency_alpha=1e-4, min_effect=0.2),
)


@pytest.fixture
def backend() -> str:
    """The store's backend does not matter here; SQLite keeps the test short."""
    return "sqlite"


async def _walk(
    database: Database, settings: Settings, canary: VersionServer, baseline: VersionServer
) -> tuple[S, str | None, SteadyClient, RuntimeApi]:
    store, deployment_id = await rolling_deployment(database, settings)
    with behind_haproxy(baseline, canary) as proxy, SteadyClient(proxy.bind[1]) as client:
        client.wait_for(20)
        rollout = CanaryRollout(
            store,
            deployment_id,
            HAProxyRouter(proxy.api),
            canary=HttpMetrics(f"http://127.0.0.1:{canary.port}/metrics"),
            baseline=HttpMetrics(f"http://127.0.0.1:{baseline.port}/metrics"),
            plan=PLAN,
        )
        finished = await rollout.run()
        client.wait_for(40)  # traffic goes on after the rollout, wherever it now goes
        weights = {name: proxy.api.weight(name) for name in ("baseline", "canary")}
        last = client.answers[-30:]
    assert weights == ({"baseline": 0, "canary": 100} if finished.state is S.PROMOTED else {
        "baseline": 100, "canary": 0})  # fmt: skip
    assert set(last) == ({"canary"} if finished.state is S.PROMOTED else {"baseline"})
    return finished.state, finished.reason, client, proxy.api


async def test_a_healthy_canary_is_promoted_with_zero_failed_requests(
    database: Database, settings: Settings
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    with VersionServer("canary") as canary, VersionServer("baseline") as baseline:
        state, reason, client, _ = await _walk(database, settings, canary, baseline)
    assert state is S.PROMOTED, reason
    assert client.failures == []
    assert {"baseline", "canary"} <= set(client.answers)


async def test_a_canary_answering_five_percent_errors_is_rolled_back_automatically(
    database: Database, settings: Settings
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    with VersionServer("canary", fail_every=20) as canary, VersionServer("baseline") as baseline:
        state, reason, client, _ = await _walk(database, settings, canary, baseline)
    assert state is S.ROLLED_BACK
    assert "error rate" in (reason or "")
    assert client.failures, "the canary did answer errors"
    assert set(client.failures) == {"500 canary"}
    total = len(client.answers) + len(client.failures)
    assert len(client.failures) / total < 0.01  # the canary had a small share, briefly

"""The fresh baseline's life in a local deployment, on made-up time: the real orchestrator,
store, walk, analysis and record, in front of an in-memory HAProxy and a machine whose
``keel serve`` processes are simulated (each group answers with its own latency; a freshly
started one is slower than the long-running production group).

Proves that the canary is judged against the fresh baseline and not against production, and
that the fresh baseline is started, given the canary's share, drained and stopped on
promotion, on rollback (automatic or from another shell, by the record) and when it never
becomes ready.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from tests.support.deploys import RELEASE, FakeRuntimeApi, rolling_deployment

from keel.db.engine import Database
from keel.deploy import Deployment, DeploymentState, DeploymentStore, Strategy, Thresholds
from keel.deploy import groups as groups_module
from keel.deploy import local as local_module
from keel.deploy.approvals import ApprovalGate
from keel.deploy.fresh_baseline import FreshBaselinePlan, shares
from keel.deploy.groups import GroupNotReady, VersionGroup
from keel.deploy.haproxy import MAX_WEIGHT
from keel.deploy.local import LocalDeployment, LocalPlan, read_record, roll_back_traffic
from keel.deploy.prechecks import CheckResult
from keel.deploy.processes import ServeProcess, Source, SourceKind
from keel.deploy.rollout import CanaryPlan
from keel.observe.metrics import Metrics
from keel.settings import Settings
from keel.testing import ManualClock

S = DeploymentState
WARM, COLD = 0.02, 0.05  # seconds per request: production after hours, a group just started
PLAN = CanaryPlan(interval_seconds=10, step_timeout_seconds=120, thresholds=Thresholds(50))


@pytest.fixture
def backend() -> str:
    return "sqlite"


class Machine:
    """Simulated ``keel serve`` groups: pids that run until stopped, and requests served
    through the proxy's weights, each group with its latency and error share."""

    def __init__(self, proxy: FakeRuntimeApi, *, canary_latency: float, canary_errors: float):
        self.proxy = proxy
        self.clock = ManualClock()
        self.rng = random.Random(7)
        self.running: set[int] = set()
        self.groups: dict[str, VersionGroup] = {}
        self.metrics: dict[str, Metrics] = {}
        self.never_ready: set[str] = set()
        self.canary = (canary_latency, canary_errors)
        self.shares_seen: list[tuple[float, float, float]] = []
        self._pid = 40_000

    def start_group(
        self, name: str, source: Source, ports: Sequence[int], **_: object
    ) -> VersionGroup:
        processes = []
        for port in ports:
            self._pid += 1
            self.running.add(self._pid)
            processes.append(ServeProcess(self._pid, port))
        group = VersionGroup(name, source, tuple(processes))
        self.groups[name] = group
        self.metrics[name] = Metrics(slo_threshold=0.3, version="1", release_id="r", git_sha="s")
        return group

    async def wait_ready(self, group: VersionGroup, *_: object, **__: object) -> None:
        if group.name[0] in self.never_ready:
            raise GroupNotReady(f"{group.name}: /ready did not answer 200")

    def stop_group(self, group: VersionGroup, **_: object) -> None:
        self.running -= {process.pid for process in group.processes}

    def is_running(self, group: VersionGroup) -> bool:
        return bool({process.pid for process in group.processes} & self.running)

    async def sleep(self, seconds: float) -> None:
        """An interval of 400 requests through the proxy, each group served its share."""
        self.clock.advance(seconds)
        for name, group in self.groups.items():
            if not self.is_running(group):
                continue
            latency, errors = (
                self.canary if name.startswith("g") else (WARM if name == "blue" else COLD, 0.0)
            )
            for _ in range(round(400 * self.proxy.share(group))):
                seconds_taken = max(0.001, self.rng.gauss(latency, latency / 4))
                status = "500" if self.rng.random() < errors else "200"
                labels = self.metrics[name].request_duration.labels("GET", "/v1/x", status, "true")
                labels.observe(seconds_taken)
        await asyncio.sleep(0)  # another task (an operator) may act between intervals

    def metrics_of(self, group: VersionGroup) -> _Scrape:
        return _Scrape(self.metrics[group.name])


@dataclass
class _Scrape:
    metrics: Metrics

    async def scrape(self) -> str:
        return generate_latest(self.metrics.registry).decode()


class _PassingSmokeTest:
    def __init__(self, url: str) -> None:
        self.name = f"smoke {url}"

    async def run(self, deployment: Deployment) -> CheckResult:
        return CheckResult(self.name, True, "200")


@dataclass
class Stage:
    store: DeploymentStore
    deployment_id: str
    proxy: FakeRuntimeApi
    machine: Machine
    production: VersionGroup
    workdir: Path

    def deploy(
        self, *, fresh: FreshBaselinePlan | None, canary: CanaryPlan = PLAN
    ) -> LocalDeployment:
        plan = LocalPlan(ports=[9001, 9002], env={}, canary=canary, fresh_baseline=fresh)
        return LocalDeployment(
            self.store,
            self.deployment_id,
            api=self.proxy,  # type: ignore[arg-type]
            baseline=self.production,
            source=Source(SourceKind.CHECKOUT, Path("/srv/new")),
            plan=plan,
            workdir=self.workdir,
            clock=self.machine.clock,
            sleep=self.machine.sleep,
        )


async def _stage(
    database: Database,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    canary_latency: float = COLD,
    canary_errors: float = 0.0,
) -> Stage:
    store, deployment_id = await rolling_deployment(database, settings)
    proxy = FakeRuntimeApi(tmp_path / "admin.sock")
    machine = Machine(proxy, canary_latency=canary_latency, canary_errors=canary_errors)
    production = machine.start_group(
        "blue", Source(SourceKind.CHECKOUT, Path("/srv/old")), [8001, 8002]
    )
    for server in production.server_names():
        proxy.weights[server] = MAX_WEIGHT // 2

    async def production_release(group: VersionGroup) -> object:
        return RELEASE

    for name, value in {
        "start_group": machine.start_group,
        "wait_ready": machine.wait_ready,
        "stop_group": machine.stop_group,
        "production_release": production_release,
        "GroupMetrics": machine.metrics_of,
        "SmokeTest": _PassingSmokeTest,
        "RuntimeApi": lambda path: proxy,
    }.items():
        monkeypatch.setattr(local_module, name, value)
    monkeypatch.setattr(groups_module, "stop_group", machine.stop_group)  # what retire() stops
    return Stage(store, deployment_id, proxy, machine, production, tmp_path)


def _fresh(stage: Stage) -> VersionGroup:
    record = read_record(stage.workdir, stage.deployment_id)
    assert record is not None
    assert record.fresh_baseline is not None
    assert record.fresh_baseline.name in record.retired
    return record.fresh_baseline


async def test_a_canary_as_cold_as_its_fresh_baseline_is_promoted_and_the_baseline_retired(
    database: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = await _stage(database, settings, tmp_path, monkeypatch)
    deploy = stage.deploy(fresh=FreshBaselinePlan(ports=(9101, 9102)))
    finished = await deploy.run()
    assert finished.state is S.PROMOTED, finished.reason
    fresh = _fresh(stage)
    assert fresh.source == stage.production.source  # the production release, started anew
    assert [process.port for process in fresh.processes] == [9101, 9102]
    assert deploy.live.name.startswith("g")
    # Both old groups drained, stopped by pid and gone from HAProxy; the canary serves alone.
    for retired in (stage.production, fresh):
        assert not stage.machine.is_running(retired)
        assert set(retired.server_names()) <= set(stage.proxy.deleted)
    assert set(stage.proxy.weights) == set(deploy.live.server_names())


async def test_the_fresh_baseline_takes_the_canarys_share_at_each_step(
    database: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = await _stage(database, settings, tmp_path, monkeypatch)
    deploy = stage.deploy(fresh=FreshBaselinePlan())
    seen: list[tuple[int, float, float, float]] = []
    plain = stage.machine.sleep

    async def sleep(seconds: float) -> None:
        record = await deploy.stored()
        assert record is not None
        assert record.candidate
        assert record.fresh_baseline
        assert record.step
        proxy = stage.proxy
        seen.append(
            (record.step.percent, proxy.share(record.candidate),
             proxy.share(record.fresh_baseline), proxy.share(stage.production))
        )  # fmt: skip
        await plain(seconds)

    deploy.sleep = sleep
    assert (await deploy.run()).state is S.PROMOTED
    assert {step for step, *_ in seen} == {5, 25, 50}
    for step, canary, baseline, production in seen:
        wanted = shares(step)
        assert abs(canary - wanted.canary / 100) < 0.02
        assert abs(baseline - wanted.baseline / 100) < 0.02
        assert abs(production - wanted.production / 100) < 0.02


async def test_without_a_fresh_baseline_the_same_canary_is_judged_slower_than_production(
    database: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up bias itself: the opt-out compares with the long-running group."""
    stage = await _stage(database, settings, tmp_path, monkeypatch)
    finished = await stage.deploy(fresh=None).run()
    assert finished.state is S.ROLLED_BACK
    assert "slower than the baseline" in (finished.reason or "")
    record = read_record(stage.workdir, stage.deployment_id)
    assert record is not None
    assert record.candidate is not None
    assert record.fresh_baseline is None
    assert set(stage.machine.groups) == {"blue", record.candidate.name}  # no third group


async def test_a_failing_canary_is_rolled_back_and_the_fresh_baseline_retired_with_it(
    database: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = await _stage(database, settings, tmp_path, monkeypatch, canary_errors=0.1)
    finished = await stage.deploy(fresh=FreshBaselinePlan()).run()
    assert finished.state is S.ROLLED_BACK
    assert "error rate" in (finished.reason or "")
    fresh = _fresh(stage)
    record = read_record(stage.workdir, stage.deployment_id)
    assert record is not None
    assert record.candidate is not None
    for retired in (record.candidate, fresh):
        assert not stage.machine.is_running(retired)
        assert set(retired.server_names()) <= set(stage.proxy.deleted)
    assert set(stage.proxy.weights) == set(stage.production.server_names())
    assert stage.machine.is_running(stage.production)
    assert stage.proxy.share(stage.production) == 1.0


@pytest.mark.parametrize(
    ("never_ready", "reason"),
    [
        ("b", "the fresh baseline did not start"),
        # No gate: the baseline started beside the canary, and is stopped with it.
        ("g", "the new version did not start"),
    ],
)
async def test_a_group_that_never_gets_ready_fails_the_deployment_and_stops_the_baseline(
    database: Database,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    never_ready: str,
    reason: str,
) -> None:
    stage = await _stage(database, settings, tmp_path, monkeypatch)
    stage.machine.never_ready.add(never_ready)
    finished = await stage.deploy(fresh=FreshBaselinePlan()).run()
    assert finished.state is S.FAILED
    assert reason in (finished.reason or "")
    fresh = _fresh(stage)
    assert not stage.machine.is_running(fresh)
    assert not any(stage.machine.is_running(group) for group in stage.machine.groups.values()
                   if group.name != "blue")  # fmt: skip
    assert set(stage.proxy.weights) == set(stage.production.server_names())
    assert stage.machine.clock.monotonic() == ManualClock().monotonic()  # no step was walked


async def test_a_rollback_from_another_shell_stops_the_fresh_baseline_by_the_record(
    database: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = await _stage(database, settings, tmp_path, monkeypatch)
    never_enough = CanaryPlan(interval_seconds=10, step_timeout_seconds=10**6,
                              thresholds=Thresholds(min_requests=10**9))  # fmt: skip
    deploy = stage.deploy(fresh=FreshBaselinePlan(), canary=never_enough)
    walking = asyncio.create_task(deploy.run())
    record = None
    for _ in range(1000):
        await asyncio.sleep(0)
        record = await deploy.stored()
        if record is not None and record.step is not None and record.step.analyses:
            break
    assert record is not None
    assert record.fresh_baseline is not None
    assert record.candidate
    assert stage.proxy.share(record.fresh_baseline) > 0
    # What `keel deploy rollback --workdir` does: the state, then the traffic from the record.
    await stage.store.move(stage.deployment_id, S.ROLLED_BACK, actor="carol")
    roll_back_traffic(record)
    assert set(stage.proxy.weights) == set(stage.production.server_names())
    assert not stage.machine.is_running(record.fresh_baseline)
    assert not stage.machine.is_running(record.candidate)
    finished = await asyncio.wait_for(walking, timeout=10)
    assert finished.state is S.ROLLED_BACK
    assert stage.machine.is_running(stage.production)


async def test_behind_an_approval_gate_the_fresh_baseline_starts_only_once_it_opens(
    database: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = await _stage(database, settings, tmp_path, monkeypatch)
    gated = await stage.store.create(
        RELEASE, environment="staging", strategy=Strategy.CANARY, created_by="alice",
        required_approvals=1,
    )  # fmt: skip
    await stage.store.move(gated.id, S.PRE_CHECKS, actor="keel")
    await stage.store.move(gated.id, S.AWAITING_APPROVAL, actor="keel")
    stage.deployment_id = gated.id
    deploy = stage.deploy(fresh=FreshBaselinePlan())
    deploy.plan = replace(deploy.plan, approval_poll_seconds=0)
    walking = asyncio.create_task(deploy.run())
    waiting = None
    for _ in range(1000):  # the canary waits at the gate: started, smoke-tested, no baseline
        await asyncio.sleep(0)
        waiting = await deploy.stored()
        if waiting is not None and waiting.candidate is not None:
            break
    for _ in range(50):  # and stays there, polling
        await asyncio.sleep(0)
    assert waiting is not None
    assert waiting.candidate is not None
    assert waiting.fresh_baseline is None
    assert set(stage.machine.groups) == {"blue", waiting.candidate.name}
    assert not walking.done()
    await stage.store.approve(
        gated.id, ApprovalGate("staging", 1, creator_may_approve=False), approver="bob"
    )
    finished = await asyncio.wait_for(walking, timeout=10)
    assert finished.state is S.PROMOTED, finished.reason
    assert not stage.machine.is_running(_fresh(stage))

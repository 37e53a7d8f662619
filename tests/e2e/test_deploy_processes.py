"""Deployments on one machine with real ``keel serve`` processes behind a real HAProxy, under a
steady load from a local client.

Each test registers the stage's HAProxy as the environment's front in its database, deploys a
new version group of this checkout (one process, its own port) onto it, made bad where the test
needs it with the fault-injection settings, and checks what the client saw, where HAProxy sends
traffic afterwards, which processes still run, and what the database records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.db.engine import Database
from keel.deploy import (
    ContractPhase,
    Deployment,
    DeploymentState,
    DeploymentStore,
    Release,
    Strategy,
    Thresholds,
    current_release,
)
from keel.deploy.approvals import ApprovalGate
from keel.deploy.bluegreen import SwitchPlan
from keel.deploy.canary import read_traffic
from keel.deploy.fresh_baseline import FreshBaselinePlan
from keel.deploy.groups import GroupMetrics, VersionGroup
from keel.deploy.local import LiveRecord, LocalDeployment, LocalPlan
from keel.deploy.migration_cycle import MigrationCycle
from keel.deploy.post_promotion import ContractStep
from keel.deploy.processes import Source
from keel.deploy.records import DatabaseRecords
from keel.deploy.rollout import CanaryPlan
from keel.migrations.runtime.schema import current_revision
from keel.migrations.script.graph import Scripts
from keel.settings import Settings
from tests.support.deploys import deployment_store
from tests.support.migration_samples import options as runner_options
from tests.support.processes import free_port
from tests.support.release_dirs import copy_sqlite, release_with_revision
from tests.support.services import need_binary
from tests.support.version_groups import PATH, Answer, LoadClient, Stage, running, stage

pytestmark = pytest.mark.e2e

S = DeploymentState
# The canary is compared with a fresh baseline: as cold as the canary, with the same share of
# traffic. Against the long-running group both warm-up and load differed (at 20 % production
# served 4x the canary's requests, and on this small busy machine the more loaded group is the
# slower: P(canary slower) was 0.12-0.33), and the test needed P(canary slower) > 0.9 at
# p < 1e-6. What is left is scheduling noise between two identical processes on 2 shared
# cores, correlated in time, which makes the U test's p-values too small: at the defaults
# (alpha 0.01, effect 0.05) about one healthy canary in seven failed at load 10-12, with
# P(canary slower) up to 0.68 (15 runs). P > 0.8 at p < 1e-3 leaves that a margin; a canary
# 200 ms slower is at P = 1.0.
THRESHOLDS = Thresholds(min_requests=20, max_error_rate=0.02, latency_alpha=1e-3, min_effect=0.3)
CANARY = CanaryPlan(
    steps=(20, 50, 100), interval_seconds=0.4, step_timeout_seconds=20, thresholds=THRESHOLDS
)

SWITCH = SwitchPlan(interval_seconds=0.2, ready_timeout_seconds=20, warm_seconds=0.5)


@pytest.fixture
def backend() -> str:
    """The deployments' store; the servers have their own SQLite. One backend keeps it short."""
    return "sqlite"


@pytest.fixture(scope="module")
def live() -> Iterator[Stage]:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    with stage() as started:
        yield started


async def _deployment(
    store: DeploymentStore,
    settings: Settings,
    strategy: Strategy = Strategy.CANARY,
    *,
    approvals: int = 0,
    release: Release | None = None,
) -> str:
    created = await store.create(
        release or current_release(settings),
        environment="prod",
        strategy=strategy,
        created_by="alice",
        required_approvals=approvals,
    )
    return created.id


async def _deploy(
    live: Stage,
    store: DeploymentStore,
    deployment_id: str,
    *,
    env: Mapping[str, str] | None = None,
    canary: CanaryPlan = CANARY,
    switch: SwitchPlan | None = None,
    source: Source | None = None,
    contract: ContractStep | None = None,
    synthetic_path: str | None = None,
) -> LocalDeployment:
    """The deployment carried onto the stage, its records in the test's database, where the
    stage's HAProxy is registered as the front of ``prod`` first (what ``keel deploy front``
    does)."""
    records = DatabaseRecords(store.database)
    front = live.front("prod")
    await records.write_live("prod", LiveRecord(front.admin_socket, live.live, front.pid, front))
    plan = LocalPlan(
        ports=[free_port()],
        env=live.env if env is None else env,
        approval_poll_seconds=0.1,
        idle_timeout_seconds=10,
        canary=canary,
        switch=switch
        or SwitchPlan(interval_seconds=0.2, ready_timeout_seconds=20, warm_seconds=0.5),
        synthetic_path=synthetic_path,
        # The fresh baseline runs production's settings, not the canary's injected faults.
        fresh_baseline=FreshBaselinePlan(env=live.env),
    )
    return LocalDeployment(
        store,
        deployment_id,
        api=live.api,
        baseline=live.live,
        source=source or Source.current_checkout(),
        plan=plan,
        workdir=live.workdir,
        records=records,
        contract=contract,
    )


async def _canary_under_load(
    live: Stage,
    database: Database,
    settings: Settings,
    *,
    new: NewVersion | None = None,
    **faults: str,
) -> tuple[Deployment, LoadClient]:
    """A canary deployment of a new group (this checkout with these fault settings, or
    ``new``) under a steady load, checked for its winner afterwards; its end and what the
    client saw."""
    store = deployment_store(database, settings)
    deployment_id = await _deployment(store, settings, release=new.release if new else None)
    deploy = await _deploy(
        live,
        store,
        deployment_id,
        env={**(new.env if new else live.env), **faults},
        source=new.source if new else None,
        contract=new.contract(store) if new else None,
    )
    old = live.live
    with live.client() as client:
        client.wait_for(20)
        finished = await _finish(live, deploy, deploy.run())
        after = client.wait_for(40)
    served = {answer.server for answer in client.answers}
    assert set(old.server_names()) <= served
    record = await deploy.records.read_record(deploy.deployment_id)
    assert record is not None
    assert record.fresh_baseline is not None
    # The fresh baseline took its share beside the canary, and was compared with it.
    assert set(record.fresh_baseline.server_names()) <= served
    await _check_winner(live, deploy, finished.state, old, after)
    return finished, client


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A new version other than this checkout: its code, release, environment and migrations."""

    source: Source
    release: Release
    env: Mapping[str, str]
    script_location: Path
    backups: Path

    def contract(self, store: DeploymentStore) -> ContractStep:
        return ContractStep(
            MigrationCycle(store, runner_options(self.script_location, self.backups))
        )


# A contract revision that notes, when the deploy's contract phase runs it (in the test's own
# process: the servers lack these variables), which of the old version's ports still answered.
PROBING_CONTRACT = """# keel-kind: contract
import os
import socket
from pathlib import Path


def upgrade() -> None:
    probe = os.environ.get("KEEL_TEST_CONTRACT_PROBE")
    if not probe:
        return
    answered = []
    for port in os.environ["KEEL_TEST_RETIRED_PORTS"].split(","):
        with socket.socket() as connection:
            connection.settimeout(1.0)
            if connection.connect_ex(("127.0.0.1", int(port))) == 0:
                answered.append(port)
    Path(probe).write_text(",".join(answered) or "none")


def downgrade() -> None:
    pass
"""


async def test_a_quiet_canary_reaches_a_verdict_on_synthetic_traffic(
    live: Stage, database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    # No client: without the synthetic requests every step is inconclusive into a rollback.
    quiet = replace(CANARY, step_timeout_seconds=10)
    deploy = await _deploy(
        live, store, await _deployment(store, settings), canary=quiet, synthetic_path=PATH
    )
    finished = await _finish(live, deploy, deploy.run())
    assert finished.state is S.PROMOTED, finished.reason
    counted = read_traffic(await GroupMetrics(live.live).scrape())
    assert counted.requests >= THRESHOLDS.min_requests  # user traffic, not probes


async def test_a_canary_answering_five_percent_errors_is_rolled_back_automatically(
    live: Stage, database: Database, settings: Settings
) -> None:
    finished, client = await _canary_under_load(
        live, database, settings, KEEL_FAULT_ERROR_RATE="0.05"
    )
    assert finished.state is S.ROLLED_BACK
    assert "error rate" in (finished.reason or "")
    assert client.failures, "the canary did answer errors"
    assert all(failure.startswith("500 g") for failure in client.failures)
    assert client.error_rate() < 0.01  # a small share, for one analysis interval


async def test_a_canary_200_ms_slower_is_rolled_back(
    live: Stage, database: Database, settings: Settings
) -> None:
    finished, client = await _canary_under_load(
        live, database, settings, KEEL_FAULT_LATENCY_MS="200"
    )
    assert finished.state is S.ROLLED_BACK
    assert "slower than the baseline" in (finished.reason or "")
    assert client.failures == [], live.proxy_log()


async def test_a_blue_green_switch_waits_for_approval_and_drops_zero_requests(
    live: Stage, database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    deployment_id = await _deployment(store, settings, Strategy.BLUE_GREEN, approvals=1)
    deploy = await _deploy(live, store, deployment_id)
    old = live.live
    with live.client() as client:
        client.wait_for(20)
        running_deploy = asyncio.create_task(deploy.run())
        await _until(store, deployment_id, S.AWAITING_APPROVAL)
        # The gate holds: the new group is up, but HAProxy does not know it.
        gated = client.wait_for(30)
        assert {answer.server for answer in gated} == set(old.server_names())
        assert set(live.weights()) == set(old.server_names())
        assert not running_deploy.done()
        gate = ApprovalGate("prod", required=1, creator_may_approve=False)
        await store.approve(deployment_id, gate, approver="bob")
        finished = await _finish(live, deploy, asyncio.wait_for(running_deploy, timeout=30))
        after = client.wait_for(40)
    assert finished.state is S.PROMOTED, finished.reason
    assert client.failures == [], live.proxy_log()
    await _check_winner(live, deploy, finished.state, old, after)


async def test_a_rollback_command_during_a_canary_restores_all_traffic_to_the_baseline(
    live: Stage,
    database: Database,
    database_url: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = deployment_store(database, settings)
    deployment_id = await _deployment(store, settings)
    # Never enough traffic to judge: the canary sits at its first step until rolled back.
    waiting = CanaryPlan(
        steps=(20, 100),
        interval_seconds=0.5,
        step_timeout_seconds=60,
        thresholds=Thresholds(min_requests=10**9),
    )
    deploy = await _deploy(live, store, deployment_id, canary=waiting)
    old = live.live
    with live.client() as client:
        running_deploy = asyncio.create_task(deploy.run())
        await _until_step(deploy, 20)
        record = await deploy.records.read_record(deployment_id)
        assert record is not None
        assert record.candidate is not None
        assert record.fresh_baseline is not None
        # The canary has its share, and so has the fresh baseline.
        _until_served(client, [record.candidate, record.fresh_baseline])
        # Another operator in another shell: the CLI knows the deployment only by its id, and
        # finds its record (admin socket, groups, pids) in the database — no working directory.
        monkeypatch.setenv("KEEL_DATABASE_URL", database_url)
        rollback = await asyncio.to_thread(
            CliRunner().invoke, cli, ["deploy", "rollback", deployment_id, "--by", "carol"]
        )
        assert rollback.exit_code == 0, rollback.output
        # The command itself sent everything back, retired the canary and the fresh baseline
        # and recorded it so.
        assert set(live.weights()) == set(old.server_names())
        assert running(record.candidate) == running(record.fresh_baseline) == []
        after_rollback = await deploy.records.read_record(deployment_id)
        assert after_rollback is not None
        assert record.candidate.name in after_rollback.retired
        assert record.fresh_baseline.name in after_rollback.retired
        after = client.wait_for(40)
        finished = await _finish(live, deploy, asyncio.wait_for(running_deploy, timeout=20))
    assert finished.state is S.ROLLED_BACK
    assert "carol" in [item.actor for item in await store.history(deployment_id)]
    assert client.failures == [], live.proxy_log()
    await _check_winner(live, deploy, finished.state, old, after)


# Last of the walks on this module's stage: the release it promotes carries a contract
# revision (c900) this checkout does not know, and a fresh baseline of that release would
# migrate the stage's SQLite database to it as it starts (keel serve migrates its own
# SQLite file), which a later deployment of this checkout could not serve.
async def test_a_healthy_canary_is_promoted_with_zero_failed_requests_then_contracts_the_schema(
    live: Stage,
    database: Database,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = release_with_revision(tmp_path, "c900", PROBING_CONTRACT)
    new = NewVersion(
        release.source,
        current_release(settings, scripts=Scripts(release.script_location)),
        # Its own copy of the servers' database: on SQLite, keel serve migrates to its head
        # (c900) as it starts, and the old version's /ready refuses a schema past its own.
        live.env_with(KEEL_DATABASE_URL=copy_sqlite(live.workdir / "keel.db", tmp_path / "new.db")),
        release.script_location,
        tmp_path / "backups",
    )
    probe = tmp_path / "probe"
    monkeypatch.setenv("KEEL_TEST_CONTRACT_PROBE", str(probe))
    old_ports = [str(process.port) for process in live.live.processes]
    monkeypatch.setenv("KEEL_TEST_RETIRED_PORTS", ",".join(old_ports))

    finished, client = await _canary_under_load(live, database, settings, new=new)
    assert finished.state is S.PROMOTED, finished.reason
    assert client.failures == [], live.proxy_log()
    assert set(live.live.server_names()) <= {answer.server for answer in client.answers}
    # Then the deploy ran the contract revision itself, once no old process answered.
    assert finished.contract_phase is ContractPhase.APPLIED, finished.contract_reason
    assert finished.contract_reason == "applied c900"
    assert probe.read_text() == "none"
    assert await current_revision(database) == "c900"


async def _finish(
    live: Stage, deploy: LocalDeployment, running: Awaitable[Deployment]
) -> Deployment:
    """The deployment's end; whatever it was, the group that won stays live for the next test
    (so one failing test does not leave the next deploying onto a retired group)."""
    try:
        return await running
    finally:
        live.live = deploy.live
        live.started.extend(deploy.record.groups().values())  # stopped with the stage


async def _check_winner(
    live: Stage, deploy: LocalDeployment, state: S, old: VersionGroup, after: list[Answer]
) -> None:
    """Afterwards only the winner serves, is registered in HAProxy and runs, and is the front's
    live group in the database; the loser's processes are stopped. The winner stays live for
    the next test."""
    record = await deploy.records.read_record(deploy.deployment_id)
    assert record is not None
    if state is S.PROMOTED:
        winner, loser = record.baseline, old
        assert record.candidate is None
    else:
        winner, loser = old, record.candidate
        assert loser is not None
    assert deploy.live == winner
    assert {answer.server for answer in after[-20:]} == set(winner.server_names())
    assert set(live.weights()) == set(winner.server_names())
    assert running(loser) == []
    assert len(running(winner)) == len(winner.processes)
    front = await deploy.records.read_live("prod")
    assert front is not None
    assert front.group == winner
    if record.fresh_baseline is not None:
        assert running(record.fresh_baseline) == []  # stopped, and (above) gone from HAProxy
        assert record.fresh_baseline.name in record.retired


def _until_served(client: LoadClient, groups: list[VersionGroup], *, most: int = 600) -> None:
    """Until every group has answered; right after a weight change HAProxy's weighted round
    robin may give one newly weighted server a run of requests before the others."""
    wanted = {name for group in groups for name in group.server_names()}
    seen: set[str] = set()
    for _ in range(most // 30):
        seen |= {answer.server for answer in client.wait_for(30)}
        if wanted <= seen:
            return
    raise AssertionError(f"{sorted(wanted - seen)} answered none of {most} requests")


async def _until(store: DeploymentStore, deployment_id: str, state: S) -> None:
    for _ in range(300):
        if (await store.get(deployment_id)).state is state:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"deployment never reached {state}")


async def _until_step(deploy: LocalDeployment, percent: int) -> None:
    for _ in range(300):
        record = await deploy.records.read_record(deploy.deployment_id)
        if record is not None and record.step is not None and record.step.percent == percent:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the canary never reached {percent} %")

"""``keel deploy front|run``: versions as groups of ``keel serve`` on this machine behind the
environment's registered HAProxy front, carried through a deployment from start to retirement."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from keel.cli._common import JsonOption, database, fail, out, print_json, run
from keel.cli.deploy._shared import (
    Fronts,
    IntervalOption,
    MaxErrorRateOption,
    MaxP99Option,
    MinRequestsOption,
    ServerPortOption,
    SourceOption,
    SourcePathOption,
    StepsOption,
    StepTimeoutOption,
    SyntheticPathOption,
    _plan,
    _report,
    _source,
    _store,
    app,
)
from keel.db.engine import Database
from keel.deploy import (
    ContractPhase,
    Deployment,
    DeploymentState,
)
from keel.deploy.bluegreen import SwitchPlan
from keel.deploy.errors import FrontNotRegistered, FrontNotServing
from keel.deploy.fresh_baseline import BaselineKind, FreshBaselinePlan
from keel.deploy.fronts import FrontState, stop_front
from keel.deploy.groups import start_group, stop_group, wait_ready
from keel.deploy.haproxy import RuntimeApi
from keel.deploy.local import (
    FileRecords,
    LiveRecord,
    LocalDeployment,
    LocalPlan,
    RecordStore,
    open_front,
    read_live,
)
from keel.deploy.migration_cycle import MigrationCycle
from keel.deploy.post_promotion import ContractStep
from keel.deploy.processes import SourceKind
from keel.deploy.records import DatabaseRecords
from keel.errors import KeelError
from keel.migrations.options import RunnerOptions
from keel.settings import Settings


@app.command("front")
def front(
    environment: str = typer.Option(..., "--env", help="The environment this front serves."),
    port: int = typer.Option(..., "--port", help="Where clients connect (HAProxy)."),
    server_ports: list[int] = ServerPortOption,
    workdir: Path = typer.Option(..., "--workdir", help="Logs and HAProxy's files."),
    source_kind: SourceKind = SourceOption,
    source_path: Path | None = SourcePathOption,
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn workers per keel serve."),
    as_json: bool = JsonOption,
) -> None:
    """Start the first version group and HAProxy in front of it, both detached, on this machine,
    and register them as the environment's front (one per environment; a front whose HAProxy
    is gone is replaced)."""
    settings = Settings()
    workdir = workdir.resolve()

    async def registered() -> Fronts:
        async with database(settings) as db:
            return await DatabaseRecords(db).fronts()

    for known, _ in run(registered):
        if known.state() is not FrontState.SERVING:
            continue
        if known.environment == environment:
            fail(f"{environment} already has a front: deploy onto it with `keel deploy run`")
        if known.workdir == workdir:
            fail(f"{workdir} holds the front of {known.environment}: use another directory")
    if read_live(workdir) is not None:
        fail(f"{workdir} already has a live group: deploy onto it with `keel deploy run`")
    source = _source(source_kind, source_path)
    group = start_group(
        "g0", source, server_ports, env=os.environ, workdir=workdir, workers=workers
    )
    try:
        run(lambda: wait_ready(group))
        live = open_front(group, environment=environment, workdir=workdir, bind_port=port)
    except KeelError as error:
        stop_group(group)
        fail(error.detail)

    async def register() -> None:
        async with database(settings) as db:
            await DatabaseRecords(db).write_live(environment, live)

    try:
        run(register)
    except typer.Exit:
        # Not registered: nothing could find them again, so they do not stay.
        if live.front is not None:
            stop_front(live.front)
        stop_group(group)
        raise
    if as_json:
        print_json(live.as_dict())
    else:
        out.print(f"serving on :{port} through {live.admin_socket}", highlight=False)


@app.command("run")
def run_local(
    deployment_id: str,
    workdir: Path | None = typer.Option(
        None,
        "--workdir",
        help="Logs here (default: the front's directory); a directory `keel deploy front` made "
        "before fronts were registered is the front itself.",
    ),
    server_ports: list[int] = ServerPortOption,
    source_kind: SourceKind = SourceOption,
    source_path: Path | None = SourcePathOption,
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn workers per keel serve."),
    steps: str = StepsOption,
    interval: float = IntervalOption,
    step_timeout: float = StepTimeoutOption,
    min_requests: int = MinRequestsOption,
    max_error_rate: float = MaxErrorRateOption,
    max_p99: float | None = MaxP99Option,
    warm: float = typer.Option(
        300.0, "--warm", min=0.0, help="Blue-green: seconds the old group stays warm."
    ),
    synthetic_path: str | None = SyntheticPathOption,
    contract: bool = typer.Option(
        True,
        "--contract/--no-contract",
        help="Once promoted and the old group stopped, run the release's contract migrations "
        "(--no-contract: leave them pending for `keel deploy migrate ID --phase contract`).",
    ),
    baseline: BaselineKind = typer.Option(
        BaselineKind.FRESH,
        "--baseline",
        help="Canary: compare with a fresh group of the production release, or with the "
        "long-running production group (biased against the just-started canary).",
    ),
    baseline_ports: list[int] = typer.Option(
        [],
        "--baseline-port",
        help="A port for one keel serve of the fresh baseline (repeatable, as many as "
        "--server-port); default: free ports.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Deploy a created deployment onto this machine, behind its environment's registered
    front: its release as a new group of keel serve processes, pre-checks, the approval gate,
    the canary (against a fresh baseline) or blue-green walk; the groups that lose are drained
    and stopped; once promoted, the contract migrations. The record (groups, pids, step) goes
    to the database, where rollback and status find it by id."""
    settings = Settings()
    workdir = workdir.resolve() if workdir is not None else None
    if baseline_ports and len(baseline_ports) != len(server_ports):
        fail("give as many --baseline-port as --server-port: the baseline matches the canary")
    canary_plan = _plan(
        steps,
        interval,
        step_timeout,
        min_requests=min_requests,
        max_error_rate=max_error_rate,
        max_p99=max_p99,
    )
    plan = LocalPlan(
        ports=server_ports,
        env=dict(os.environ),
        workers=workers,
        canary=canary_plan,
        switch=SwitchPlan(warm_seconds=warm),
        synthetic_path=synthetic_path,
        fresh_baseline=FreshBaselinePlan(ports=baseline_ports)
        if baseline is BaselineKind.FRESH
        else None,
    )
    source = _source(source_kind, source_path)

    async def go() -> Deployment:
        async with database(settings) as db:
            store = _store(db, settings)
            deployment = await store.get(deployment_id)
            records, live, logs = await _front_of(db, deployment.environment, workdir)
            cycle = MigrationCycle(store, RunnerOptions.from_settings(settings))
            return await LocalDeployment(
                store,
                deployment_id,
                api=RuntimeApi(live.admin_socket),
                baseline=live.group,
                source=source,
                plan=plan,
                workdir=workdir or logs,
                records=records,
                contract=ContractStep(cycle, deferred=not contract),
            ).run()

    deployment = run(go)
    _report(deployment, as_json)
    if deployment.state is not DeploymentState.PROMOTED:
        raise typer.Exit(1)
    if deployment.contract_phase is ContractPhase.FAILED or (
        contract and deployment.contract_phase is ContractPhase.PENDING
    ):
        # Promoted, but the schema has not caught up: the reason says what to run.
        fail(f"promoted; contract phase {deployment.contract_phase}: {deployment.contract_reason}")


async def _front_of(
    db: Database, environment: str, workdir: Path | None
) -> tuple[RecordStore, LiveRecord, Path]:
    """Where a local deployment keeps its record, the front it deploys behind and the front's
    directory: the environment's registered front, else (a directory made before fronts were
    registered) ``workdir``'s ``live.json``."""
    records = DatabaseRecords(db)
    live = await records.read_live(environment)
    if live is not None and live.front is not None:
        state = live.front.state()
        if state is not FrontState.SERVING:
            raise FrontNotServing(
                f"the front of {environment} is not serving ({state.value}): "
                f"register a new one with `keel deploy front --env {environment}`"
            )
        return records, live, live.front.workdir
    if workdir is not None:
        files = FileRecords(workdir)
        found = await files.read_live(environment)
        if found is not None:
            return files, found, workdir
    raise FrontNotRegistered(
        f"{environment} has no front: start one with `keel deploy front --env {environment}`"
    )

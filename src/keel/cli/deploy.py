"""``keel deploy``: create, approve, watch and roll back deployments.

Thin wrappers over :mod:`keel.deploy`. A deployment created here runs its
pre-checks at once and stops at the environment's approval gate or in
``rolling``; ``promote`` and ``rollback`` end it. Everything is recorded in the
database and the audit log, so any operator's ``status`` sees the same truth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from keel.audit import build_auditor
from keel.cli._common import JsonOption, database, fail, out, print_items, print_json, run
from keel.db.engine import Database
from keel.deploy import (
    ContractPhase,
    Deployment,
    DeploymentState,
    DeploymentStore,
    ExpandBeforeTraffic,
    MigrationsRehearsed,
    PreCheck,
    SchemaServable,
    SmokeTest,
    Strategy,
    Thresholds,
    current_release,
    gate_for,
    run_pre_checks,
)
from keel.deploy.bluegreen import BlueGreenSwitch, HttpReadiness, SwitchPlan
from keel.deploy.errors import FrontNotRegistered, FrontNotServing
from keel.deploy.fresh_baseline import BaselineKind, FreshBaselinePlan
from keel.deploy.fronts import Front, FrontState, stop_front
from keel.deploy.groups import VersionGroup, start_group, stop_group, wait_ready
from keel.deploy.haproxy import HAProxy, RuntimeApi, Server, haproxy_binary
from keel.deploy.local import (
    DeploymentRecord,
    FileRecords,
    LiveRecord,
    LocalDeployment,
    LocalPlan,
    RecordStore,
    open_front,
    read_live,
    read_record,
    roll_back_traffic,
    write_record,
)
from keel.deploy.manifests import BASE, DEFAULT_PROMETHEUS, ManifestOptions
from keel.deploy.manifests import render as render_manifests
from keel.deploy.manifests import write as write_manifests
from keel.deploy.migration_cycle import MigrationCycle, Phase
from keel.deploy.post_promotion import ContractStep
from keel.deploy.processes import Source, SourceKind
from keel.deploy.prometheus_source import version_metrics
from keel.deploy.records import DatabaseRecords
from keel.deploy.rollout import (
    CanaryPlan,
    CanaryRollout,
    HAProxyRouter,
    HttpSyntheticTraffic,
)
from keel.errors import KeelError
from keel.migrations.options import RunnerOptions
from keel.observe.metrics import duration_buckets
from keel.settings import Settings

app = typer.Typer(help="Safe deploys: releases, deployments, approval gates.", no_args_is_help=True)

EnvOption = typer.Option(None, "--env", help="Only this environment.")


def _operator() -> str:
    return os.environ.get("USER") or "cli"


ByOption = typer.Option(None, "--by", help="Who is acting (recorded); default: $USER.")

WorkdirOption = typer.Option(
    None,
    "--workdir",
    help="Also read local deployments' records from this directory's JSON files "
    "(directories made before the records moved into the database).",
)


def _store(db: Database, settings: Settings) -> DeploymentStore:
    return DeploymentStore(db, build_auditor(settings, db))


_COLUMNS: dict[str, Any] = {
    "id": "id",
    "env": "environment",
    "state": "state",
    "version": "version",
    "git sha": lambda item: str(item["git_sha"])[:12],
    "approvals": lambda item: f"{len(item['approvals'])}/{item['required_approvals']}",
    "by": "created_by",
    "contract": "contract_phase",
    "reason": "reason",
}


def _table(deployments: Sequence[Deployment], title: str | None = None) -> Table:
    table = Table(*_COLUMNS, title=title)
    for deployment in deployments:
        item = deployment.as_dict()
        cells = [column(item) if callable(column) else item[column] for column in _COLUMNS.values()]
        table.add_row(*("-" if cell in (None, "") else str(cell) for cell in cells))
    return table


@app.command("create")
def create(
    environment: str = typer.Option(..., "--env", help="The environment to deploy to."),
    strategy: Strategy = typer.Option(Strategy.CANARY, "--strategy", help="How traffic moves."),
    git_sha: str | None = typer.Option(
        None, "--git-sha", help="The release's commit (default: KEEL_GIT_SHA, else the checkout's)."
    ),
    smoke_urls: list[str] = typer.Option(
        [], "--smoke-url", help="A URL of the new version that must answer 200 (repeatable)."
    ),
    migration_checks: bool = typer.Option(
        True, help="Lint and dry-run the revisions the release would apply."
    ),
    by: str | None = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Record this checkout's release, create a deployment and run its pre-checks."""
    settings = Settings()
    release = current_release(settings)
    if git_sha is not None:
        release = type(release)(release.version, git_sha, release.migration_head)
    gate = gate_for(settings, environment)

    async def go() -> tuple[Deployment, list[dict[str, object]]]:
        async with database(settings) as db:
            store = _store(db, settings)
            created = await store.create(
                release,
                environment=environment,
                strategy=strategy,
                created_by=by or _operator(),
                required_approvals=gate.required,
            )
            checks: list[PreCheck] = [SchemaServable(db)]
            if migration_checks:
                checks.append(ExpandBeforeTraffic(db))
                checks.append(MigrationsRehearsed(db, RunnerOptions.from_settings(settings)))
            checks.extend(SmokeTest(url) for url in smoke_urls)
            deployment, results = await run_pre_checks(store, created.id, checks)
            return deployment, [result.as_dict() for result in results]

    deployment, checks = run(go)
    if as_json:
        print_json({**deployment.as_dict(), "checks": checks})
    else:
        out.print(_table([deployment]))
        for check in checks:
            mark = "[green]ok[/green]" if check["ok"] else "[red]failed[/red]"
            out.print(f"{mark} {check['name']}: {check['detail']}", highlight=False)
    if deployment.state is DeploymentState.FAILED:
        raise typer.Exit(1)


@app.command("status")
def status(
    environment: str | None = EnvOption,
    watch: bool = typer.Option(False, "--watch", help="Follow until the deployments finish."),
    timeout: float = typer.Option(
        600.0, "--timeout", min=0.0, help="With --watch: give up (exit 2) after this many seconds."
    ),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="With --watch: refresh."),
    workdir: Path | None = WorkdirOption,
    as_json: bool = JsonOption,
) -> None:
    """The active deployments (of one environment) with the current step (share, analysis
    verdict, samples) of those running on one machine, and the registered fronts (serving, or
    their HAProxy gone); --watch follows them live."""
    settings = Settings()

    async def active() -> _Local:
        async with database(settings) as db:
            found = await _store(db, settings).active(environment)
            return await _local(db, found, environment, workdir)

    async def outstanding() -> list[Deployment]:
        async with database(settings) as db:
            return await _store(db, settings).contracts_outstanding(environment)

    async def reload(ids: Sequence[str]) -> _Local:
        async with database(settings) as db:
            store = _store(db, settings)
            found = [await store.get(deployment_id) for deployment_id in ids]
            return await _local(db, found, environment, workdir)

    found, records, fronts = run(active)
    if not watch:
        contracts = run(outstanding)
        if as_json:
            print_json(
                {
                    "items": [deployment.as_dict() for deployment in found],
                    "contracts_outstanding": [deployment.as_dict() for deployment in contracts],
                    "fronts": [_front_item(front, group) for front, group in fronts],
                }
            )
            return
        if not found:
            out.print("no active deployment")
        else:
            out.print(_table(found))
            steps = _steps_table(records)
            if steps is not None:
                out.print(steps)
        if contracts:
            out.print(_table(contracts, title="promoted, contract phase outstanding"))
        if fronts:
            out.print(_fronts_table(fronts))
        return
    if not found:
        out.print("no active deployment")
        return
    ids = [deployment.id for deployment in found]
    deadline = time.monotonic() + timeout
    current = found
    view = _watch_view(current, records, fronts, deadline)
    with Live(view, console=out, auto_refresh=False) as live:
        while any(deployment.active for deployment in current):
            if time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            current, records, fronts = run(lambda: reload(ids))
            live.update(_watch_view(current, records, fronts, deadline), refresh=True)
    if as_json:
        print_json({"items": [deployment.as_dict() for deployment in current]})
    if any(deployment.active for deployment in current):
        fail(f"still active after {timeout:g} s", code=2)


_Fronts = list[tuple[Front, VersionGroup]]
_Local = tuple[list[Deployment], list[DeploymentRecord], _Fronts]
"""Deployments, the records of those run on one machine, and the fronts (of their environment)."""


async def _local(
    db: Database, deployments: list[Deployment], environment: str | None, workdir: Path | None
) -> _Local:
    records = DatabaseRecords(db)
    found = [await _record(records, deployment.id, workdir) for deployment in deployments]
    fronts = [
        (front, group)
        for front, group in await records.fronts()
        if environment is None or front.environment == environment
    ]
    return deployments, [record for record in found if record is not None], fronts


async def _record(
    records: DatabaseRecords, deployment_id: str, workdir: Path | None
) -> DeploymentRecord | None:
    """A local deployment's record: in the database, else in ``workdir``'s files (made before)."""
    found = await records.read_record(deployment_id)
    if found is None and workdir is not None:
        found = read_record(workdir, deployment_id)
    return found


def _watch_view(
    deployments: Sequence[Deployment],
    records: Sequence[DeploymentRecord],
    fronts: _Fronts,
    deadline: float,
) -> Group:
    left = max(0.0, deadline - time.monotonic())
    steps = _steps_table(records)
    return Group(
        _table(deployments),
        *([steps] if steps is not None else []),
        *([_fronts_table(fronts)] if fronts else []),
        Text(f"watching; giving up in {left:.0f} s", style="dim"),
    )


def _front_item(front: Front, group: VersionGroup) -> dict[str, Any]:
    return {**front.as_dict(), "state": front.state().value, "live_group": group.name}


def _fronts_table(fronts: _Fronts) -> Table:
    """Each registered front: where it listens, whether its HAProxy still runs, what it serves."""
    table = Table("env", "listen", "haproxy pid", "state", "live group", "host", title="fronts")
    for front, group in fronts:
        item = _front_item(front, group)
        style = "green" if item["state"] == FrontState.SERVING else "red"
        table.add_row(
            item["environment"],
            f"{item['bind_host']}:{item['bind_port']}",
            str(item["pid"]),
            Text(item["state"], style=style),
            item["live_group"],
            item["host_name"],
        )
    return table


def _steps_table(records: Sequence[DeploymentRecord]) -> Table | None:
    """Each local deployment's current step: the new version's share and the last analysis."""
    rows = [record for record in records if record.step is not None]
    if not rows:
        return None
    table = Table("id", "weight", "verdict", "samples (canary/baseline)", "analyses", "reasons",
                  title="current step")  # fmt: skip
    for record in rows:
        step = record.step
        assert step is not None
        samples = (
            f"{step.canary_requests}/{step.baseline_requests}"
            if step.canary_requests is not None
            else "-"
        )
        table.add_row(
            record.deployment_id,
            f"{step.percent} %",
            step.verdict or "-",
            samples,
            str(step.analyses),
            "; ".join(step.reasons) or "-",
        )
    return table


@app.command("list")
def list_deployments(
    environment: str | None = EnvOption,
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="At most this many."),
    as_json: bool = JsonOption,
) -> None:
    """Recent deployments, newest first."""
    settings = Settings()

    async def go() -> list[Deployment]:
        async with database(settings) as db:
            return await _store(db, settings).recent(environment=environment, limit=limit)

    found = run(go)
    if as_json:
        print_json({"items": [deployment.as_dict() for deployment in found]})
    elif not found:
        out.print("no deployment yet")
    else:
        out.print(_table(found))


@app.command("show")
def show(deployment_id: str, as_json: bool = JsonOption) -> None:
    """One deployment with its release, approvals and every transition."""
    settings = Settings()

    async def go() -> dict[str, Any]:
        async with database(settings) as db:
            store = _store(db, settings)
            deployment = await store.get(deployment_id)
            history = await store.history(deployment_id)
        return {**deployment.as_dict(), "history": [item.as_dict() for item in history]}

    shown = run(go)
    if as_json:
        print_json(shown)
        return
    for name in ("id", "environment", "state", "strategy", "version", "git_sha"):
        out.print(f"{name}: {shown[name]}", highlight=False)
    out.print(f"migration_head: {shown['migration_head']}", highlight=False)
    out.print(f"approvals: {shown['approvals']} of {shown['required_approvals']}", highlight=False)
    if shown["contract_phase"] is not None:
        contract = f"contract phase: {shown['contract_phase']}"
        if shown["contract_reason"]:
            contract += f" ({shown['contract_reason']})"
        out.print(contract, highlight=False)
    print_items(
        shown["history"],
        {"#": "seq", "from": "from_state", "to": "to_state", "by": "actor", "at": "occurred_at",
         "reason": "reason"},
        as_json=False,
    )  # fmt: skip


@app.command("approve")
def approve(deployment_id: str, by: str | None = ByOption, as_json: bool = JsonOption) -> None:
    """Approve a deployment waiting at its gate; enough approvals start the rollout."""
    settings = Settings()

    async def go() -> Deployment:
        async with database(settings) as db:
            store = _store(db, settings)
            waiting = await store.get(deployment_id)
            gate = gate_for(settings, waiting.environment)
            return await store.approve(deployment_id, gate, approver=by or _operator())

    _report(run(go), as_json)


@app.command("promote")
def promote(deployment_id: str, by: str | None = ByOption, as_json: bool = JsonOption) -> None:
    """Mark a rolling deployment as promoted (it serves all traffic)."""
    _move(deployment_id, DeploymentState.PROMOTED, by, None, as_json)


@app.command("rollback")
def rollback(
    deployment_id: str,
    reason: str = typer.Option("rolled back by an operator", "--reason", help="Why (recorded)."),
    by: str | None = ByOption,
    workdir: Path | None = WorkdirOption,
    as_json: bool = JsonOption,
) -> None:
    """Roll an active deployment back, at any step, unless the schema left its baseline behind.

    A deployment running version groups on one machine (its record in the database, or in
    --workdir's files) has all its traffic sent back to the baseline at once, and its new
    group drained and stopped.
    """
    settings = Settings()

    async def guard() -> DeploymentRecord | None:
        async with database(settings) as db:
            cycle = MigrationCycle(_store(db, settings), RunnerOptions.from_settings(settings))
            await cycle.check_rollback(deployment_id)
            return await DatabaseRecords(db).read_record(deployment_id)

    record = run(guard)
    files = None
    if record is None and workdir is not None:
        files, record = workdir, read_record(workdir, deployment_id)
    _move(deployment_id, DeploymentState.ROLLED_BACK, by, reason, as_json)
    if record is None or record.candidate is None:
        return
    try:
        roll_back_traffic(record)
    except KeelError as error:
        fail(f"rolled back in the database, but the traffic could not be moved: {error}")
    stopped = [record.candidate, record.fresh_baseline]
    retired = replace(
        record,
        retired=(*record.retired, *(group.name for group in stopped if group is not None)),
    )
    if files is not None:
        write_record(files, retired)
        return

    async def mark() -> None:
        # The runner may be gone: the record says the new groups are stopped (a state only
        # ever moves to retired, so the runner's own writes cannot undo it).
        async with database(settings) as db:
            await DatabaseRecords(db).write_record(retired)

    run(mark)


@app.command("migrate")
def migrate(
    deployment_id: str,
    phase: Phase = typer.Option(
        ..., "--phase", help="expand: before traffic shifts; contract: after promotion."
    ),
    by: str | None = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a deployment's expand or contract migrations (audited as a step of it)."""
    settings = Settings()

    async def go() -> tuple[str, ...]:
        async with database(settings) as db:
            options = RunnerOptions.from_settings(settings, actor=by or _operator())
            cycle = MigrationCycle(_store(db, settings), options)
            if phase is Phase.EXPAND:
                return await cycle.expand(deployment_id)
            return await cycle.contract(deployment_id, actor=by or _operator())

    applied = run(go)
    if as_json:
        print_json({"deployment_id": deployment_id, "phase": phase.value, "applied": applied})
    else:
        out.print(f"{phase.value}: {', '.join(applied) or 'nothing to apply'}", highlight=False)


def _move(
    deployment_id: str,
    target: DeploymentState,
    by: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    settings = Settings()

    async def go() -> Deployment:
        async with database(settings) as db:
            return await _store(db, settings).move(
                deployment_id, target, actor=by or _operator(), reason=reason
            )

    _report(run(go), as_json)


def _report(deployment: Deployment, as_json: bool) -> None:
    print_json(deployment.as_dict()) if as_json else out.print(_table([deployment]))


def _percentages(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError as error:
        raise typer.BadParameter("comma-separated percentages: 5,25,50,100") from error


# The canary plan's options, shared by the walk (canary) and the Argo analysis (manifests): one
# set of numbers, one meaning.
StepsOption = typer.Option("5,25,50,100", "--steps", help="Canary shares, in %.")
IntervalOption = typer.Option(30.0, "--interval", min=0.1, help="Seconds per analysis.")
StepTimeoutOption = typer.Option(
    300.0, "--step-timeout", min=0.1, help="Inconclusive this long at a step: roll back."
)
MinRequestsOption = typer.Option(100, "--min-requests", min=1, help="Per version and step.")
MaxErrorRateOption = typer.Option(0.01, "--max-error-rate", min=0.0, max=1.0)
MaxP99Option = typer.Option(None, "--max-p99", help="Seconds; unset: no bound.")
LatencyAlphaOption = typer.Option(
    0.01, "--latency-alpha", min=0.0, max=1.0, help="Significance of 'the canary is slower'."
)
MinEffectOption = typer.Option(
    0.05, "--min-effect", min=0.0, max=0.5, help="P(canary slower) must exceed 0.5 + this."
)
SyntheticPathOption = typer.Option(
    None,
    "--synthetic-path",
    help="While inconclusive, GET this path on each version to reach --min-requests.",
)


def _plan(
    steps: str,
    interval: float,
    step_timeout: float,
    thresholds: Thresholds,
) -> CanaryPlan:
    try:
        return CanaryPlan(
            steps=_percentages(steps),
            interval_seconds=interval,
            step_timeout_seconds=step_timeout,
            thresholds=thresholds,
        )
    except ValueError as error:
        fail(str(error))


@app.command("canary")
def canary(
    deployment_id: str,
    admin_socket: Path = typer.Option(..., "--haproxy-socket", help="HAProxy's admin socket."),
    canary_metrics: str = typer.Option(..., "--canary-metrics", help="The canary's /metrics URL."),
    baseline_metrics: str = typer.Option(
        ..., "--baseline-metrics", help="The baseline's /metrics URL."
    ),
    canary_server: str = typer.Option("canary", help="The canary's HAProxy server name."),
    baseline_server: str = typer.Option("baseline", help="The baseline's HAProxy server name."),
    steps: str = StepsOption,
    interval: float = IntervalOption,
    step_timeout: float = StepTimeoutOption,
    min_requests: int = MinRequestsOption,
    max_error_rate: float = MaxErrorRateOption,
    max_p99: float | None = MaxP99Option,
    synthetic_path: str | None = SyntheticPathOption,
    latency_alpha: float = LatencyAlphaOption,
    min_effect: float = MinEffectOption,
    as_json: bool = JsonOption,
) -> None:
    """Walk a rolling deployment's canary steps behind HAProxy; roll back on a failed analysis."""
    settings = Settings()
    plan = _plan(
        steps,
        interval,
        step_timeout,
        Thresholds(
            min_requests=min_requests,
            max_error_rate=max_error_rate,
            max_p99_seconds=max_p99,
            latency_alpha=latency_alpha,
            min_effect=min_effect,
        ),
    )
    router = HAProxyRouter(RuntimeApi(admin_socket), baseline=baseline_server, canary=canary_server)
    synthetic = None
    if synthetic_path is not None:
        synthetic = HttpSyntheticTraffic(
            str(httpx.URL(canary_metrics).copy_with(path=synthetic_path, query=None)),
            str(httpx.URL(baseline_metrics).copy_with(path=synthetic_path, query=None)),
        )

    _walk(
        settings,
        lambda store: CanaryRollout(
            store,
            deployment_id,
            router,
            canary=version_metrics(settings.deploy_prometheus_url, canary_metrics),
            baseline=version_metrics(settings.deploy_prometheus_url, baseline_metrics),
            plan=plan,
            synthetic=synthetic,
        ),
        as_json,
    )


@app.command("manifests")
def manifests(
    output: Path = typer.Option(..., "--output", help="Directory to write the manifests into."),
    image: str = typer.Option(..., "--image", help="The release's image, e.g. REGISTRY/keel:TAG."),
    environment: str = typer.Option(..., "--env", help="The environment (namespace keel-ENV)."),
    replicas: int = typer.Option(2, "--replicas", min=1, help="The autoscaler's minimum."),
    max_replicas: int | None = typer.Option(
        None, "--max-replicas", min=1, help="The autoscaler's maximum (default 3 x --replicas)."
    ),
    steps: str = StepsOption,
    interval: float = IntervalOption,
    step_timeout: float = StepTimeoutOption,
    min_requests: int = MinRequestsOption,
    max_error_rate: float = MaxErrorRateOption,
    max_p99: float | None = MaxP99Option,
    latency_alpha: float = LatencyAlphaOption,
    min_effect: float = MinEffectOption,
    prometheus_url: str | None = typer.Option(
        None,
        "--prometheus-url",
        help="Prometheus for the analysis (default: KEEL_DEPLOY_PROMETHEUS_URL, else in-cluster).",
    ),
    base: Path | None = typer.Option(
        None, "--base", help="The kustomize base to generate from (default: the checkout's)."
    ),
) -> None:
    """Write Kubernetes manifests for this release: workload, autoscaler, Argo canary."""
    settings = Settings()
    plan = _plan(
        steps,
        interval,
        step_timeout,
        Thresholds(
            min_requests=min_requests,
            max_error_rate=max_error_rate,
            max_p99_seconds=max_p99,
            latency_alpha=latency_alpha,
            min_effect=min_effect,
        ),
    )
    try:
        options = ManifestOptions(
            image=image,
            environment=environment,
            version=current_release(settings).version,
            buckets=duration_buckets(settings.slo_latency_seconds),
            replicas=replicas,
            max_replicas=max_replicas,
            plan=plan,
            prometheus_url=prometheus_url or settings.deploy_prometheus_url or DEFAULT_PROMETHEUS,
        )
        written = write_manifests(render_manifests(options, base or BASE), output)
    except (ValueError, OSError, KeelError) as error:
        fail(str(error))
    for path in written:
        out.print(str(path), highlight=False)


@app.command("switch")
def switch(
    deployment_id: str,
    admin_socket: Path = typer.Option(..., "--haproxy-socket", help="HAProxy's admin socket."),
    ready_url: str = typer.Option(..., "--ready-url", help="The new version's /ready URL."),
    canary_server: str = typer.Option("canary", help="The new version's HAProxy server name."),
    baseline_server: str = typer.Option("baseline", help="The old version's HAProxy server name."),
    ready_timeout: float = typer.Option(60.0, "--ready-timeout", min=0.1, help="Seconds."),
    warm: float = typer.Option(
        300.0, "--warm", min=0.0, help="Seconds the old version stays warm for a rollback."
    ),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between polls."),
    as_json: bool = JsonOption,
) -> None:
    """Blue-green: once the new version is ready, give it all traffic in one switch."""
    settings = Settings()
    router = HAProxyRouter(RuntimeApi(admin_socket), baseline=baseline_server, canary=canary_server)
    plan = SwitchPlan(
        interval_seconds=interval, ready_timeout_seconds=ready_timeout, warm_seconds=warm
    )

    _walk(
        settings,
        lambda store: BlueGreenSwitch(
            store, deployment_id, router, probe=HttpReadiness(ready_url), plan=plan
        ),
        as_json,
    )


class _Walk(Protocol):
    async def run(self) -> Deployment: ...


def _walk(settings: Settings, make: Callable[[DeploymentStore], _Walk], as_json: bool) -> None:
    """Run a canary or blue-green walk; exit 1 unless it ended promoted."""

    async def go() -> Deployment:
        async with database(settings) as db:
            return await make(_store(db, settings)).run()

    deployment = run(go)
    _report(deployment, as_json)
    if deployment.state is not DeploymentState.PROMOTED:
        raise typer.Exit(1)


@app.command("proxy")
def proxy(
    port: int = typer.Option(..., "--port", help="Where clients connect."),
    baseline: str = typer.Option(..., "--baseline", help="HOST:PORT of the running version."),
    canary_address: str = typer.Option(..., "--canary", help="HOST:PORT of the new version."),
    workdir: Path = typer.Option(..., "--workdir", help="Configuration and admin socket here."),
    host: str = typer.Option("127.0.0.1", "--host"),
    health_path: str | None = typer.Option("/ready", "--health-path", help="Empty: no checks."),
) -> None:
    """Run HAProxy in the foreground: 100 % baseline, 0 % canary, admin socket in --workdir."""
    servers = [
        Server("baseline", *_address(baseline), weight=100),
        Server("canary", *_address(canary_address), weight=0),
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    frontend = HAProxy(
        servers, workdir=workdir, bind_port=port, bind_host=host, health_path=health_path or None
    )
    frontend.config_path.write_text(frontend.config, encoding="utf-8")
    out.print(f"admin socket: {frontend.admin_socket}", highlight=False)
    binary = haproxy_binary()
    os.execv(binary, [binary, "-db", "-f", str(frontend.config_path)])  # noqa: S606 - our binary


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"{text!r} is not HOST:PORT")
    return host, int(port)


SourceOption = typer.Option(
    SourceKind.CHECKOUT,
    "--from",
    help="Where the version's code is: this checkout, a virtualenv, or a release directory.",
)
SourcePathOption = typer.Option(
    None,
    "--path",
    help="The virtualenv or release directory (with --from); default: this checkout.",
)
ServerPortOption = typer.Option(
    ..., "--server-port", help="A port for one keel serve of the group (repeatable)."
)


def _source(kind: SourceKind, path: Path | None) -> Source:
    if kind is SourceKind.CHECKOUT and path is None:
        return Source.current_checkout()
    if path is None:
        fail(f"--from {kind.value} needs --path")
    return Source(kind, path.resolve())


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

    async def registered() -> _Fronts:
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
    try:
        canary_plan = CanaryPlan(
            steps=_percentages(steps),
            interval_seconds=interval,
            step_timeout_seconds=step_timeout,
            thresholds=Thresholds(
                min_requests=min_requests, max_error_rate=max_error_rate, max_p99_seconds=max_p99
            ),
        )
    except ValueError as error:
        fail(str(error))
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

"""``keel deploy create|status|list|show|approve|promote|rollback|migrate``: a deployment's
life in the database, whichever shell acts. ``status`` and ``rollback`` also read where a local
deployment's versions run (its record), so one command sends traffic back at once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.live import Live

from keel.cli._common import JsonOption, database, fail, out, print_items, print_json, run
from keel.cli.deploy._shared import (
    ByOption,
    EnvOption,
    WorkdirOption,
    _move,
    _operator,
    _report,
    _store,
    _table,
    app,
)
from keel.cli.deploy.status_view import (
    Local,
    front_item,
    fronts_table,
    local_view,
    steps_table,
    watch_view,
)
from keel.deploy import (
    Deployment,
    DeploymentState,
    ExpandBeforeTraffic,
    MigrationsRehearsed,
    PreCheck,
    SchemaServable,
    SmokeTest,
    Strategy,
    current_release,
    gate_for,
    run_pre_checks,
)
from keel.deploy.local import (
    DeploymentRecord,
    read_record,
    roll_back_traffic,
    write_record,
)
from keel.deploy.migration_cycle import MigrationCycle, Phase
from keel.deploy.records import DatabaseRecords
from keel.errors import KeelError
from keel.migrations.options import RunnerOptions
from keel.settings import Settings


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

    async def active() -> Local:
        async with database(settings) as db:
            found = await _store(db, settings).active(environment)
            return await local_view(db, found, environment, workdir)

    async def outstanding() -> list[Deployment]:
        async with database(settings) as db:
            return await _store(db, settings).contracts_outstanding(environment)

    async def reload(ids: Sequence[str]) -> Local:
        async with database(settings) as db:
            store = _store(db, settings)
            found = [await store.get(deployment_id) for deployment_id in ids]
            return await local_view(db, found, environment, workdir)

    found, records, fronts = run(active)
    if not watch:
        contracts = run(outstanding)
        if as_json:
            print_json(
                {
                    "items": [deployment.as_dict() for deployment in found],
                    "contracts_outstanding": [deployment.as_dict() for deployment in contracts],
                    "fronts": [front_item(front, group) for front, group in fronts],
                }
            )
            return
        if not found:
            out.print("no active deployment")
        else:
            out.print(_table(found))
            steps = steps_table(records)
            if steps is not None:
                out.print(steps)
        if contracts:
            out.print(_table(contracts, title="promoted, contract phase outstanding"))
        if fronts:
            out.print(fronts_table(fronts))
        return
    if not found:
        out.print("no active deployment")
        return
    ids = [deployment.id for deployment in found]
    deadline = time.monotonic() + timeout
    current = found
    view = watch_view(current, records, fronts, deadline)
    with Live(view, console=out, auto_refresh=False) as live:
        while any(deployment.active for deployment in current):
            if time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            current, records, fronts = run(lambda: reload(ids))
            live.update(watch_view(current, records, fronts, deadline), refresh=True)
    if as_json:
        print_json({"items": [deployment.as_dict() for deployment in current]})
    if any(deployment.active for deployment in current):
        fail(f"still active after {timeout:g} s", code=2)


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

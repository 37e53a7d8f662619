"""What the ``keel deploy`` commands share: the Typer app, the options that mean the same
in several commands (one canary plan's numbers for ``canary``, ``manifests`` and ``run``; one
version source for ``front`` and ``run``), the store and the deployment table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from keel.audit import build_auditor
from keel.cli._common import database, fail, out, print_json, run
from keel.db.engine import Database
from keel.deploy import (
    Deployment,
    DeploymentState,
    DeploymentStore,
    Thresholds,
)
from keel.deploy.fronts import Front
from keel.deploy.groups import VersionGroup
from keel.deploy.processes import Source, SourceKind
from keel.deploy.rollout import (
    CanaryPlan,
)
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
    *,
    min_requests: int,
    max_error_rate: float,
    max_p99: float | None,
    latency_alpha: float = LatencyAlphaOption.default,
    min_effect: float = MinEffectOption.default,
) -> CanaryPlan:
    """The canary plan from the options ``canary``, ``manifests`` and ``run`` share."""
    try:
        return CanaryPlan(
            steps=_percentages(steps),
            interval_seconds=interval,
            step_timeout_seconds=step_timeout,
            thresholds=Thresholds(
                min_requests=min_requests,
                max_error_rate=max_error_rate,
                max_p99_seconds=max_p99,
                latency_alpha=latency_alpha,
                min_effect=min_effect,
            ),
        )
    except ValueError as error:
        fail(str(error))


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


Fronts = list[tuple[Front, VersionGroup]]
"""The registered fronts, each with the group it serves."""

"""What ``keel deploy status`` shows: the deployments, the current step of those run on one
machine (their records), and the registered fronts — as Rich tables, live with ``--watch``,
or as JSON items."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from keel.cli.deploy._shared import Fronts, _table
from keel.db.engine import Database
from keel.deploy import Deployment
from keel.deploy.fronts import Front, FrontState
from keel.deploy.groups import VersionGroup
from keel.deploy.local import DeploymentRecord, read_record
from keel.deploy.records import DatabaseRecords

Local = tuple[list[Deployment], list[DeploymentRecord], Fronts]
"""Deployments, the records of those run on one machine, and the fronts (of their environment)."""


async def local_view(
    db: Database, deployments: list[Deployment], environment: str | None, workdir: Path | None
) -> Local:
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


def watch_view(
    deployments: Sequence[Deployment],
    records: Sequence[DeploymentRecord],
    fronts: Fronts,
    deadline: float,
) -> Group:
    left = max(0.0, deadline - time.monotonic())
    steps = steps_table(records)
    return Group(
        _table(deployments),
        *([steps] if steps is not None else []),
        *([fronts_table(fronts)] if fronts else []),
        Text(f"watching; giving up in {left:.0f} s", style="dim"),
    )


def front_item(front: Front, group: VersionGroup) -> dict[str, Any]:
    return {**front.as_dict(), "state": front.state().value, "live_group": group.name}


def fronts_table(fronts: Fronts) -> Table:
    """Each registered front: where it listens, whether its HAProxy still runs, what it serves."""
    table = Table("env", "listen", "haproxy pid", "state", "live group", "host", title="fronts")
    for front, group in fronts:
        item = front_item(front, group)
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


def steps_table(records: Sequence[DeploymentRecord]) -> Table | None:
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

"""Where versions run, in the database: fronts, version groups, each deployment's record.

The :class:`~keel.deploy.local.RecordStore` any shell reaches: ``keel deploy
run``, ``rollback`` and ``status`` find an environment's front by the
environment and a deployment's groups by its id, without knowing the working
directory the processes were started from (which keeps only their logs and
HAProxy's files).

- A front is registered once per environment (its primary key); registering
  again replaces it. It points at its live group.
- A deployment's groups are rows keyed by (deployment, name), each holding the
  role it has in the record (``baseline``, ``candidate``, … — the record's field
  names) until another group takes that role, and its state (``serving`` until
  the record names it retired). Their processes are rows with pid, port and the
  kernel's start mark, which is what lets a later ``stop`` tell our process from
  an unrelated one that reused the pid.
- Promotion moves the front to the deployment's new group in the transaction
  that moves the deployment to ``promoted`` (:mod:`keel.deploy.store`), so the
  two never disagree, whatever happens to the runner afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables_deploy import (
    DeployFrontRow,
    DeployGroupProcessRow,
    DeployGroupRow,
    DeploymentRow,
    DeployRecordRow,
)
from keel.deploy.approvals import check_environment
from keel.deploy.errors import (
    DeploymentNotFound,
    FrontAlreadyRegistered,
    FrontNotRegistered,
    RecordInconsistent,
)
from keel.deploy.fronts import Front, FrontState, this_host
from keel.deploy.groups import VersionGroup
from keel.deploy.local import DeploymentRecord, LiveRecord, Step
from keel.deploy.processes import ServeProcess, Source, SourceKind
from keel.deploy.store import CANDIDATE_ROLE, SERVING, has_record_tables
from keel.ids import new_id

RETIRED = "retired"
FRESH_BASELINE_ROLE = "fresh_baseline"
"""The role (the record's field) of a canary's fresh baseline: the baseline's release."""
LIVE_ROLE = "live"
"""The role of the group a front was started with, which belongs to no deployment."""


class DatabaseRecords:
    """Fronts, groups and deployment records in Keel's database."""

    def __init__(self, database: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.database = database
        self.clock = clock
        self._tables = False

    async def _readable(self, session: AsyncSession) -> bool:
        """Whether there is anything to read: before revision 0017 there is no front and no
        record, and ``status`` and ``rollback`` must work before a release's expand revisions
        have run (writing still needs them)."""
        self._tables = self._tables or await session.run_sync(has_record_tables)
        return self._tables

    # --- fronts -----------------------------------------------------------------

    async def read_live(self, environment: str) -> LiveRecord | None:
        async with self.database.read() as session:
            if not await self._readable(session):
                return None
            row = await session.get(DeployFrontRow, environment)
            if row is None:
                return None
            (group,) = await _groups(session, [row.live_group_id])
        return _live(row, group)

    async def fronts(self) -> list[tuple[Front, VersionGroup]]:
        """Every registered front with its live group, by environment."""
        async with self.database.read() as session:
            if not await self._readable(session):
                return []
            rows = list(
                await session.scalars(select(DeployFrontRow).order_by(DeployFrontRow.environment))
            )
            groups = await _groups(session, [row.live_group_id for row in rows])
        return [(_front(row), group) for row, group in zip(rows, groups, strict=True)]

    async def write_live(self, environment: str, live: LiveRecord) -> None:
        """Register ``live.front`` as the environment's front, or point the registered front
        at ``live.group`` (a live record without a front, or with the registered one).

        A front replaces the one registered before only once that one's HAProxy is gone
        (seen from this host); two ``keel deploy front`` at once register one of them.
        """
        check_environment(environment)
        try:
            await self._write_live(environment, live)
        except IntegrityError as error:  # another registration inserted the row first
            raise FrontAlreadyRegistered(f"{environment} has just registered a front") from error

    async def _write_live(self, environment: str, live: LiveRecord) -> None:
        now = self.clock.now()
        async with self.database.write() as session:
            row = await session.get(DeployFrontRow, environment, with_for_update=True)
            if row is None and live.front is None:
                raise FrontNotRegistered(
                    f"{environment} has no front: start one with `keel deploy front --env`"
                )
            if row is not None and live.front is not None:
                registered = _front(row)
                if registered != live.front and registered.state() is FrontState.SERVING:
                    raise FrontAlreadyRegistered(
                        f"{environment} already has a front (haproxy pid {registered.pid})"
                    )
            group_id = await self._serving_group(session, environment, live.group, now)
            if row is None:
                row = DeployFrontRow(environment=environment)
                session.add(row)
            if live.front is not None:
                _register(row, live.front, now)
            row.live_group_id = group_id
            row.updated_at = now

    async def _serving_group(
        self, session: AsyncSession, environment: str, group: VersionGroup, now: datetime
    ) -> str:
        """The row of ``group`` as it serves in ``environment`` (the newest of that name
        with its pids), else a new one belonging to no deployment."""
        rows = list(
            await session.scalars(
                select(DeployGroupRow)
                .where(
                    DeployGroupRow.environment == environment,
                    DeployGroupRow.name == group.name,
                    DeployGroupRow.state == SERVING,
                )
                .order_by(DeployGroupRow.created_at.desc(), DeployGroupRow.id.desc())
            )
        )
        pids = [process.pid for process in group.processes]
        for found, row in zip(await _groups(session, [row.id for row in rows]), rows, strict=True):
            if [process.pid for process in found.processes] == pids:
                return row.id
        added = _new_group(group, environment=environment, role=LIVE_ROLE, now=now)
        session.add(added)
        await session.flush()
        _add_processes(session, added.id, group.processes)
        return added.id

    # --- deployment records -------------------------------------------------------

    async def read_record(self, deployment_id: str) -> DeploymentRecord | None:
        async with self.database.read() as session:
            if not await self._readable(session):
                return None
            row = await session.get(DeployRecordRow, deployment_id)
            if row is None:
                return None
            held = list(
                await session.scalars(
                    select(DeployGroupRow)
                    .where(DeployGroupRow.deployment_id == deployment_id)
                    .order_by(DeployGroupRow.created_at, DeployGroupRow.name)
                )
            )
            groups = await _groups(session, [group.id for group in held])
        roles: dict[str, Any] = {
            group_row.role: group
            for group_row, group in zip(held, groups, strict=True)
            if group_row.role is not None
        }
        if "baseline" not in roles:
            raise RecordInconsistent(f"the record of deployment {deployment_id} has no baseline")
        retired = sorted(
            (group for group in held if group.state == RETIRED),
            key=lambda group: (group.retired_at or group.updated_at, group.name),
        )
        return DeploymentRecord(
            deployment_id=deployment_id,
            admin_socket=Path(row.admin_socket),
            step=_step(row),
            retired=tuple(group.name for group in retired),
            **roles,
        )

    async def write_record(self, record: DeploymentRecord) -> None:
        """The record as written: its step, each group in its role, the retired ones marked."""
        now = self.clock.now()
        held = record.groups()
        async with self.database.write() as session:
            deployment = await session.get(DeploymentRow, record.deployment_id)
            if deployment is None:
                raise DeploymentNotFound(f"no deployment {record.deployment_id}")
            row = await session.get(DeployRecordRow, record.deployment_id)
            if row is None:
                row = DeployRecordRow(deployment_id=record.deployment_id)
                session.add(row)
            _write_step(row, record, now)
            existing = {
                group.name: group
                for group in await session.scalars(
                    select(DeployGroupRow).where(
                        DeployGroupRow.deployment_id == record.deployment_id
                    )
                )
            }
            role_of = {group.name: role for role, group in held.items()}
            unknown = set(record.retired) - set(existing) - set(role_of)
            if unknown:
                raise RecordInconsistent(
                    f"deployment {record.deployment_id} retires groups it never held: "
                    + ", ".join(sorted(unknown))
                )
            # Roles given up first, so that (deployment, role) stays unique after each statement.
            for name, group_row in existing.items():
                if group_row.role is not None and role_of.get(name) != group_row.role:
                    group_row.role = None
                    group_row.updated_at = now
            await session.flush()
            for role, group in held.items():
                found = existing.get(group.name)
                if found is None:
                    group_row = _new_group(
                        group, environment=deployment.environment, role=role, now=now
                    )
                    group_row.deployment_id = record.deployment_id
                    # A fresh baseline runs the release its baseline runs (under its own name).
                    runs = record.baseline if role == FRESH_BASELINE_ROLE else group
                    group_row.release_id = await _release_of(session, deployment, role, runs)
                    session.add(group_row)
                    await session.flush()
                    _add_processes(session, group_row.id, group.processes)
                    existing[group.name] = group_row
                elif found.role != role:
                    found.role = role
                    found.updated_at = now
            newly = [
                name
                for name, group_row in existing.items()
                if name in record.retired and group_row.state != RETIRED
            ]
            if newly:
                # The same processes are recorded by the deployment that started them (or the
                # front) too: retired there as well, by their name in this environment.
                await session.execute(
                    update(DeployGroupRow)
                    .where(
                        DeployGroupRow.environment == deployment.environment,
                        DeployGroupRow.name.in_(newly),
                        DeployGroupRow.state == SERVING,
                    )
                    .values(state=RETIRED, retired_at=now, updated_at=now)
                    .execution_options(synchronize_session="fetch")
                )


def _register(row: DeployFrontRow, front: Front, now: datetime) -> None:
    row.host_name = front.host_name
    row.workdir = str(front.workdir)
    row.admin_socket = str(front.admin_socket)
    row.config_path = str(front.config_path)
    row.bind_host = front.bind_host
    row.bind_port = front.bind_port
    row.haproxy_pid = front.pid
    row.haproxy_start_mark = front.start_mark
    row.haproxy_started_at = front.started_at
    row.registered_at = now


def _live(row: DeployFrontRow, group: VersionGroup) -> LiveRecord:
    front = _front(row)
    return LiveRecord(front.admin_socket, group, front.pid, front)


def _front(row: DeployFrontRow) -> Front:
    return Front(
        environment=row.environment,
        host_name=row.host_name,
        workdir=Path(row.workdir),
        admin_socket=Path(row.admin_socket),
        config_path=Path(row.config_path),
        bind_host=row.bind_host,
        bind_port=row.bind_port,
        pid=row.haproxy_pid,
        start_mark=row.haproxy_start_mark,
        started_at=row.haproxy_started_at,
    )


def _new_group(
    group: VersionGroup, *, environment: str, role: str, now: datetime
) -> DeployGroupRow:
    return DeployGroupRow(
        id=new_id(),
        environment=environment,
        name=group.name,
        role=role,
        state=SERVING,
        source_kind=group.source.kind.value,
        source_path=str(group.source.path),
        host_name=this_host(),
        created_at=now,
        updated_at=now,
    )


def _add_processes(session: AsyncSession, group_id: str, processes: Iterable[ServeProcess]) -> None:
    for position, process in enumerate(processes):
        session.add(
            DeployGroupProcessRow(
                group_id=group_id,
                position=position,
                pid=process.pid,
                host=process.host,
                port=process.port,
                start_mark=process.start_mark,
            )
        )


async def _release_of(
    session: AsyncSession, deployment: DeploymentRow, role: str, group: VersionGroup
) -> str | None:
    """The release a group runs: the deployment's own for the group it started, else the one
    recorded for the newest group of that name in the environment (unknown for a first group)."""
    if role == CANDIDATE_ROLE:
        return deployment.release_id
    return await session.scalar(
        select(DeployGroupRow.release_id)
        .where(
            DeployGroupRow.environment == deployment.environment,
            DeployGroupRow.name == group.name,
            DeployGroupRow.release_id.is_not(None),
        )
        .order_by(DeployGroupRow.created_at.desc())
        .limit(1)
    )


async def _groups(session: AsyncSession, ids: Sequence[str]) -> list[VersionGroup]:
    """The groups of these ids, in this order, with their processes (two statements)."""
    if not ids:
        return []
    rows = {
        row.id: row
        for row in await session.scalars(select(DeployGroupRow).where(DeployGroupRow.id.in_(ids)))
    }
    processes: dict[str, list[ServeProcess]] = {}
    for process in await session.scalars(
        select(DeployGroupProcessRow)
        .where(DeployGroupProcessRow.group_id.in_(ids))
        .order_by(DeployGroupProcessRow.group_id, DeployGroupProcessRow.position)
    ):
        processes.setdefault(process.group_id, []).append(
            ServeProcess(
                pid=process.pid,
                port=process.port,
                host=process.host,
                start_mark=process.start_mark,
            )
        )
    return [
        VersionGroup(
            rows[group_id].name,
            Source(SourceKind(rows[group_id].source_kind), Path(rows[group_id].source_path)),
            tuple(processes.get(group_id, ())),
        )
        for group_id in ids
    ]


def _write_step(row: DeployRecordRow, record: DeploymentRecord, now: datetime) -> None:
    step = record.step
    row.admin_socket = str(record.admin_socket)
    row.step_percent = step.percent if step else None
    row.step_verdict = step.verdict if step else None
    row.step_canary_requests = step.canary_requests if step else None
    row.step_baseline_requests = step.baseline_requests if step else None
    row.step_reasons = json.dumps(list(step.reasons)) if step else None
    row.step_analyses = step.analyses if step else None
    row.updated_at = now


def _step(row: DeployRecordRow) -> Step | None:
    if row.step_percent is None:
        return None
    return Step(
        percent=row.step_percent,
        verdict=row.step_verdict,
        canary_requests=row.step_canary_requests,
        baseline_requests=row.step_baseline_requests,
        reasons=tuple(json.loads(row.step_reasons or "[]")),
        analyses=row.step_analyses or 0,
    )

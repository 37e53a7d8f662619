"""Deployments in the database: created, moved through :data:`TRANSITIONS`, approved, audited.

Every change is one transaction that locks the deployment's row, checks the
move against the state table, writes the new state and a transition row, and
appends the audit event with :meth:`Auditor.record` in the same transaction —
so the history, the audit log and the state can never disagree. The one
active deployment per environment is the database's rule (a partial unique
index); the store only turns its refusal into :class:`DeploymentInProgress`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from keel.audit import AuditEvent, Auditor, EventCode
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables_deploy import (
    DeployFrontRow,
    DeployGroupRow,
    DeploymentApprovalRow,
    DeploymentRow,
    DeploymentTransitionRow,
    ReleaseRow,
)
from keel.deploy.approvals import ApprovalGate, check_environment
from keel.deploy.errors import (
    ApprovalRefused,
    DeploymentInProgress,
    DeploymentNotFound,
    InvalidOperator,
)
from keel.deploy.release import Release
from keel.deploy.states import (
    OUTSTANDING,
    TERMINAL,
    ContractPhase,
    DeploymentState,
    IllegalTransition,
    check,
    check_contract,
)
from keel.ids import new_id

SYSTEM_ACTOR = "keel"
"""The actor of moves Keel makes by itself (pre-check results, an approval gate opening)."""

CANDIDATE_ROLE = "candidate"
"""The role, in a local deployment's record, of the group it started (keel.deploy.records)."""
SERVING = "serving"
"""A recorded version group's state until the record names it retired."""

_OPERATOR = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class Strategy(StrEnum):
    CANARY = "canary"
    BLUE_GREEN = "blue-green"


def check_operator(name: str) -> str:
    if not _OPERATOR.match(name):
        raise InvalidOperator(
            f"{name!r} is not an operator name (letters, digits, '.', '_', ':', '-'; up to 100)"
        )
    return name


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    environment: str
    release_id: str
    release: Release
    strategy: Strategy
    state: DeploymentState
    created_by: str
    required_approvals: int
    approvals: tuple[str, ...]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    contract_phase: ContractPhase | None = None
    contract_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.environment,
            "release_id": self.release_id,
            "version": self.release.version,
            "git_sha": self.release.git_sha,
            "migration_head": self.release.migration_head,
            "strategy": self.strategy.value,
            "state": self.state.value,
            "created_by": self.created_by,
            "required_approvals": self.required_approvals,
            "approvals": list(self.approvals),
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "contract_phase": self.contract_phase.value if self.contract_phase else None,
            "contract_reason": self.contract_reason,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    seq: int
    from_state: DeploymentState | None
    to_state: DeploymentState
    actor: str
    reason: str | None
    occurred_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "from_state": self.from_state.value if self.from_state else None,
            "to_state": self.to_state.value,
            "actor": self.actor,
            "reason": self.reason,
            "occurred_at": self.occurred_at.isoformat(),
        }


class DeploymentStore:
    def __init__(
        self, database: Database, auditor: Auditor, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.database = database
        self.auditor = auditor
        self.clock = clock

    # --- writes -----------------------------------------------------------------

    async def create(
        self,
        release: Release,
        *,
        environment: str,
        strategy: Strategy,
        created_by: str,
        required_approvals: int,
    ) -> Deployment:
        """A new deployment in ``created``; refused while the environment has an active one."""
        check_environment(environment)
        check_operator(created_by)
        now = self.clock.now()
        deployment_id = new_id()
        try:
            async with self.database.write() as session:
                release_id = await self._record_release(session, release)
                row = DeploymentRow(
                    id=deployment_id,
                    environment=environment,
                    release_id=release_id,
                    strategy=strategy.value,
                    state=DeploymentState.CREATED.value,
                    created_by=created_by,
                    required_approvals=required_approvals,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                await session.flush()
                await self._transition(session, row, None, created_by, None, seq=1)
        except IntegrityError as error:
            active = await self.active(environment)
            if not active:
                raise
            raise DeploymentInProgress(
                f"{environment} already has deployment {active[0].id} in {active[0].state}; "
                "finish or roll it back first"
            ) from error
        return await self.get(deployment_id)

    async def move(
        self, deployment_id: str, target: DeploymentState, *, actor: str, reason: str | None = None
    ) -> Deployment:
        """Move along one edge of the state table (raises :class:`IllegalTransition`)."""
        check_operator(actor)
        async with self.database.write() as session:
            row = await self._lock(session, deployment_id)
            await self._move(session, row, target, actor, reason)
        return await self.get(deployment_id)

    async def approve(self, deployment_id: str, gate: ApprovalGate, *, approver: str) -> Deployment:
        """Add ``approver``'s approval; the gate opening moves the deployment to ``rolling``."""
        check_operator(approver)
        async with self.database.write() as session:
            row = await self._lock(session, deployment_id)
            if row.state != DeploymentState.AWAITING_APPROVAL:
                raise ApprovalRefused(
                    f"deployment {deployment_id} is {row.state}, not awaiting approval"
                )
            already = await self._approvers(session, deployment_id)
            gate.check(creator=row.created_by, approver=approver, already=already)
            session.add(
                DeploymentApprovalRow(
                    deployment_id=deployment_id, approver=approver, approved_at=self.clock.now()
                )
            )
            await session.flush()
            count = len(already) + 1
            await self.auditor.record(
                session,
                AuditEvent(
                    EventCode.DEPLOYMENT_APPROVED,
                    fields={
                        "deployment_id": deployment_id,
                        "environment": row.environment,
                        "by": approver,
                        "approvals": count,
                        "required": row.required_approvals,
                    },
                ),
            )
            if count >= row.required_approvals:
                reason = f"approved by {', '.join(sorted([*already, approver]))}"
                await self._move(session, row, DeploymentState.ROLLING, SYSTEM_ACTOR, reason)
        return await self.get(deployment_id)

    async def record_step(self, deployment_id: str, step: int, percent: int) -> None:
        """Audit that a rolling deployment's canary now takes ``percent`` % of the traffic."""
        async with self.database.write() as session:
            row = await self._lock(session, deployment_id)
            if row.state != DeploymentState.ROLLING:
                raise IllegalTransition(f"deployment {deployment_id} is {row.state}, not rolling")
            row.updated_at = self.clock.now()
            await self.auditor.record(
                session,
                AuditEvent(
                    EventCode.DEPLOYMENT_PROMOTED,
                    fields={"release_id": row.release_id, "step": step, "weight_percent": percent},
                ),
            )

    async def move_contract(
        self,
        deployment_id: str,
        target: ContractPhase,
        *,
        actor: str,
        reason: str | None = None,
    ) -> Deployment:
        """Move a promoted deployment's contract phase (raises :class:`IllegalTransition`),
        audited in the same transaction."""
        check_operator(actor)
        async with self.database.write() as session:
            row = await self._lock(session, deployment_id)
            if row.state != DeploymentState.PROMOTED:
                raise IllegalTransition(
                    f"deployment {deployment_id} is {row.state}: only a promoted deployment "
                    "has a contract phase"
                )
            source = ContractPhase(row.contract_phase) if row.contract_phase else None
            check_contract(source, target)
            row.contract_phase = target.value
            row.contract_reason = reason
            row.updated_at = self.clock.now()
            await self.auditor.record(
                session,
                AuditEvent(
                    EventCode.DEPLOYMENT_CONTRACT_PHASE_CHANGED,
                    fields={
                        "deployment_id": row.id,
                        "environment": row.environment,
                        "from_phase": source.value if source else None,
                        "to_phase": target.value,
                        "by": actor,
                        "reason": reason[:500] if reason else None,
                    },
                ),
            )
        return await self.get(deployment_id)

    async def _record_release(self, session: AsyncSession, release: Release) -> str:
        """The id of ``release``'s row, inserted the first time it is seen."""
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(
            insert(ReleaseRow)
            .values(
                id=new_id(),
                version=release.version,
                git_sha=release.git_sha,
                migration_head=release.migration_head,
                created_at=self.clock.now(),
            )
            .on_conflict_do_nothing(index_elements=["version", "git_sha", "migration_head"])
        )
        found = await session.scalar(
            select(ReleaseRow.id).where(
                ReleaseRow.version == release.version,
                ReleaseRow.git_sha == release.git_sha,
                ReleaseRow.migration_head == release.migration_head,
            )
        )
        if found is None:  # pragma: no cover - inserted or already there
            raise RuntimeError("release row vanished")
        return found

    async def _lock(self, session: AsyncSession, deployment_id: str) -> DeploymentRow:
        row = (
            await session.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.id == deployment_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).first()
        if row is None:
            raise DeploymentNotFound(f"no deployment {deployment_id}")
        return row

    async def _move(
        self,
        session: AsyncSession,
        row: DeploymentRow,
        target: DeploymentState,
        actor: str,
        reason: str | None,
    ) -> None:
        source = DeploymentState(row.state)
        check(source, target)
        now = self.clock.now()
        row.state = target.value
        row.updated_at = now
        row.reason = reason
        if target in TERMINAL:
            row.finished_at = now
        if target is DeploymentState.PROMOTED:
            await self._front_follows(session, row)
        seq = await session.scalar(
            select(func.max(DeploymentTransitionRow.seq)).where(
                DeploymentTransitionRow.deployment_id == row.id
            )
        )
        await self._transition(session, row, source, actor, reason, seq=(seq or 0) + 1)

    async def _front_follows(self, session: AsyncSession, row: DeploymentRow) -> None:
        """The environment's registered front serves the promoted deployment's new group from
        this transaction on (for a deployment run on one machine, whose groups are recorded).

        A release may be promoted before its expand revisions ran on the database; before
        revision 0017 there is no front to move, and the promotion must not fail for it.
        """
        if not await session.run_sync(has_record_tables):
            return
        candidate = await session.scalar(
            select(DeployGroupRow.id).where(
                DeployGroupRow.deployment_id == row.id,
                DeployGroupRow.role == CANDIDATE_ROLE,
                DeployGroupRow.state == SERVING,
            )
        )
        if candidate is not None:
            await session.execute(
                update(DeployFrontRow)
                .where(DeployFrontRow.environment == row.environment)
                .values(live_group_id=candidate, updated_at=row.updated_at)
            )

    async def _transition(
        self,
        session: AsyncSession,
        row: DeploymentRow,
        source: DeploymentState | None,
        actor: str,
        reason: str | None,
        *,
        seq: int,
    ) -> None:
        session.add(
            DeploymentTransitionRow(
                deployment_id=row.id,
                seq=seq,
                from_state=source.value if source else None,
                to_state=row.state,
                actor=actor,
                reason=reason,
                occurred_at=row.updated_at,
            )
        )
        await session.flush()
        await self.auditor.record(
            session,
            AuditEvent(
                EventCode.DEPLOYMENT_STATE_CHANGED,
                fields={
                    "deployment_id": row.id,
                    "environment": row.environment,
                    "release_id": row.release_id,
                    "from_state": source.value if source else None,
                    "to_state": row.state,
                    "by": actor,
                    "reason": reason[:500] if reason else None,
                },
            ),
        )

    async def _approvers(self, session: AsyncSession, deployment_id: str) -> list[str]:
        rows = await session.scalars(
            select(DeploymentApprovalRow.approver)
            .where(DeploymentApprovalRow.deployment_id == deployment_id)
            .order_by(DeploymentApprovalRow.approved_at, DeploymentApprovalRow.approver)
        )
        return list(rows)

    # --- reads ------------------------------------------------------------------

    async def get(self, deployment_id: str) -> Deployment:
        found = await self._select(DeploymentRow.id == deployment_id, limit=1)
        if not found:
            raise DeploymentNotFound(f"no deployment {deployment_id}")
        return found[0]

    async def recent(self, *, environment: str | None = None, limit: int = 20) -> list[Deployment]:
        """The newest deployments first, of one environment or all."""
        where = [] if environment is None else [DeploymentRow.environment == environment]
        return await self._select(*where, limit=limit)

    async def active(self, environment: str | None = None) -> list[Deployment]:
        where: list[ColumnElement[bool]] = [DeploymentRow.finished_at.is_(None)]
        if environment is not None:
            where.append(DeploymentRow.environment == environment)
        return await self._select(*where, limit=100)

    async def contracts_outstanding(self, environment: str | None = None) -> list[Deployment]:
        """Each environment's latest promoted deployment, when its contract phase is pending,
        running or failed. An older one's is moot: the next release's contract phase runs
        every revision up to its own head, the older release's included."""
        where = [DeploymentRow.state == DeploymentState.PROMOTED.value]
        if environment is not None:
            where.append(DeploymentRow.environment == environment)
        latest: dict[str, Deployment] = {}
        for deployment in await self._select(*where, limit=200):  # newest first
            latest.setdefault(deployment.environment, deployment)
        return [item for item in latest.values() if item.contract_phase in OUTSTANDING]

    async def history(self, deployment_id: str) -> list[Transition]:
        async with self.database.read() as session:
            rows = await session.scalars(
                select(DeploymentTransitionRow)
                .where(DeploymentTransitionRow.deployment_id == deployment_id)
                .order_by(DeploymentTransitionRow.seq)
            )
            return [
                Transition(
                    seq=row.seq,
                    from_state=DeploymentState(row.from_state) if row.from_state else None,
                    to_state=DeploymentState(row.to_state),
                    actor=row.actor,
                    reason=row.reason,
                    occurred_at=row.occurred_at,
                )
                for row in rows
            ]

    async def _select(self, *where: Any, limit: int) -> list[Deployment]:
        async with self.database.read() as session:
            rows = (
                await session.execute(
                    select(DeploymentRow, ReleaseRow)
                    .join(ReleaseRow, ReleaseRow.id == DeploymentRow.release_id)
                    .where(*where)
                    .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                    .limit(limit)
                )
            ).all()
            approvals: dict[str, list[str]] = {}
            ids = [deployment.id for deployment, _ in rows]
            if ids:
                for deployment_id, approver in await session.execute(
                    select(DeploymentApprovalRow.deployment_id, DeploymentApprovalRow.approver)
                    .where(DeploymentApprovalRow.deployment_id.in_(ids))
                    .order_by(DeploymentApprovalRow.approved_at, DeploymentApprovalRow.approver)
                ):
                    approvals.setdefault(deployment_id, []).append(approver)
        return [_deployment(row, release, approvals.get(row.id, [])) for row, release in rows]


def has_record_tables(session: Session) -> bool:
    """Whether revision 0017 (fronts, groups, records of local deployments) has run."""
    return inspect(session.connection()).has_table(DeployFrontRow.__tablename__)


def _deployment(row: DeploymentRow, release: ReleaseRow, approvals: list[str]) -> Deployment:
    return Deployment(
        id=row.id,
        environment=row.environment,
        release_id=row.release_id,
        release=Release(
            version=release.version, git_sha=release.git_sha, migration_head=release.migration_head
        ),
        strategy=Strategy(row.strategy),
        state=DeploymentState(row.state),
        created_by=row.created_by,
        required_approvals=row.required_approvals,
        approvals=tuple(approvals),
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        contract_phase=ContractPhase(row.contract_phase) if row.contract_phase else None,
        contract_reason=row.contract_reason,
    )

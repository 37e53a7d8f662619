"""The tables of safe deploys: releases, deployments, their approvals and transitions.

A release is what would run (package version, git sha, migration head); a
deployment is one attempt to bring a release into an environment. Only one
deployment per environment may be active: the partial unique index on
``environment WHERE finished_at IS NULL`` makes the database refuse a second,
whatever the code does. ``finished_at`` is set in the same write as the
terminal state. Approvals are keyed by (deployment, approver), so one person
counts once. Transitions are the deployment's own history for ``keel deploy
show``; the audit log holds the tamper-evident copy. A promoted deployment's
contract phase (its post-promotion migrations) is two columns of its row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from keel.db.tables import ID, Base
from keel.db.types import UTCDateTime


class ReleaseRow(Base):
    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("version", "git_sha", "migration_head"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    git_sha: Mapped[str] = mapped_column(String(64))
    migration_head: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (
        Index(
            "ix_deployments_environment_active",
            "environment",
            unique=True,
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
        Index(None, "environment", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32))
    release_id: Mapped[str] = mapped_column(ID, ForeignKey("releases.id"))
    strategy: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24))
    created_by: Mapped[str] = mapped_column(String(100))
    required_approvals: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Once promoted: where its contract revisions stand (keel.deploy.states.ContractPhase).
    contract_phase: Mapped[str | None] = mapped_column(String(16), default=None)
    contract_reason: Mapped[str | None] = mapped_column(Text, default=None)


class DeploymentApprovalRow(Base):
    __tablename__ = "deployment_approvals"

    deployment_id: Mapped[str] = mapped_column(ID, ForeignKey("deployments.id"), primary_key=True)
    approver: Mapped[str] = mapped_column(String(100), primary_key=True)
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeploymentTransitionRow(Base):
    __tablename__ = "deployment_transitions"

    deployment_id: Mapped[str] = mapped_column(ID, ForeignKey("deployments.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    from_state: Mapped[str | None] = mapped_column(String(24), default=None)
    to_state: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())

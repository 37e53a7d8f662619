"""The tables of safe deploys: releases, deployments, their approvals and transitions.

A release is what would run (package version, git sha, migration head); a
deployment is one attempt to bring a release into an environment. Only one
deployment per environment may be active: the partial unique index on
``environment WHERE finished_at IS NULL`` makes the database refuse a second,
whatever the code does. ``finished_at`` is set in the same write as the
terminal state. Approvals are keyed by (deployment, approver), so one person
counts once. Transitions are the deployment's own history for ``keel deploy
show``; the audit log holds the tamper-evident copy. A promoted deployment's
contract phase (its post-promotion migrations) is two columns of its row
(revision 0016).

Where versions run on one machine is kept beside them (revision 0017): each
environment's registered front (its HAProxy, one per environment: the primary
key), the version groups of ``keel serve`` processes (a deployment's, by role;
or the one a front was started with, belonging to no deployment) with each
process' pid, port and start mark (boot id and start tick: which run of the pid
is ours), and each deployment's record (the admin socket it commands and its
walk's current step).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
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


class DeployGroupRow(Base):
    """A version group: ``role`` is its place in the deployment's record (``baseline``,
    ``candidate``, …; NULL once another group took it), ``live`` for a front's first group."""

    __tablename__ = "deploy_groups"
    __table_args__ = (
        UniqueConstraint("deployment_id", "name"),
        UniqueConstraint("deployment_id", "role"),
        Index(None, "environment", "name"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32))
    deployment_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("deployments.id"), default=None
    )
    name: Mapped[str] = mapped_column(String(32))
    role: Mapped[str | None] = mapped_column(String(32), default=None)
    state: Mapped[str] = mapped_column(String(16))
    source_kind: Mapped[str] = mapped_column(String(16))
    source_path: Mapped[str] = mapped_column(Text)
    release_id: Mapped[str | None] = mapped_column(ID, ForeignKey("releases.id"), default=None)
    host_name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class DeployGroupProcessRow(Base):
    __tablename__ = "deploy_group_processes"

    group_id: Mapped[str] = mapped_column(ID, ForeignKey("deploy_groups.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    start_mark: Mapped[str | None] = mapped_column(String(64), default=None)


class DeployFrontRow(Base):
    __tablename__ = "deploy_fronts"

    environment: Mapped[str] = mapped_column(String(32), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(255))
    workdir: Mapped[str] = mapped_column(Text)
    admin_socket: Mapped[str] = mapped_column(Text)
    config_path: Mapped[str] = mapped_column(Text)
    bind_host: Mapped[str] = mapped_column(String(255))
    bind_port: Mapped[int] = mapped_column(Integer)
    haproxy_pid: Mapped[int] = mapped_column(Integer)
    haproxy_start_mark: Mapped[str] = mapped_column(String(64))
    haproxy_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    live_group_id: Mapped[str] = mapped_column(ID, ForeignKey("deploy_groups.id"))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeployRecordRow(Base):
    """A deployment's record beyond its groups: the admin socket and the walk's current step."""

    __tablename__ = "deploy_records"

    deployment_id: Mapped[str] = mapped_column(ID, ForeignKey("deployments.id"), primary_key=True)
    admin_socket: Mapped[str] = mapped_column(Text)
    step_percent: Mapped[int | None] = mapped_column(Integer, default=None)
    step_verdict: Mapped[str | None] = mapped_column(String(16), default=None)
    step_canary_requests: Mapped[int | None] = mapped_column(BigInteger, default=None)
    step_baseline_requests: Mapped[int | None] = mapped_column(BigInteger, default=None)
    step_reasons: Mapped[str | None] = mapped_column(Text, default=None)  # a JSON array
    step_analyses: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

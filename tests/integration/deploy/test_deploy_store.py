"""Deployments in a real database (SQLite and PostgreSQL): one active per environment
(the database's rule), every move checked against the table and audited in its transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from tests.support.deploys import deployment_store

from keel.db.engine import Database
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.deploy import (
    ApprovalGate,
    ApprovalRefused,
    DeploymentInProgress,
    DeploymentState,
    DeploymentStore,
    IllegalTransition,
    InvalidOperator,
    Release,
    SchemaServable,
    Strategy,
    run_pre_checks,
)
from keel.migrations import head_revision
from keel.settings import Settings

S = DeploymentState
RELEASE = Release(version="1.2.3", git_sha="a" * 40, migration_head=head_revision() or "")
PROD = ApprovalGate("prod", 2, creator_may_approve=False)


async def _create(store: DeploymentStore, environment: str = "prod", required: int = 2) -> str:
    deployment = await store.create(
        RELEASE,
        environment=environment,
        strategy=Strategy.CANARY,
        created_by="alice",
        required_approvals=required,
    )
    return deployment.id


async def _audited(database: Database) -> list[tuple[str, dict[str, object]]]:
    async with database.read() as session:
        rows = await session.execute(
            select(AuditRow.code, AuditRow.fields)
            .where(AuditRow.code.like("deployment.%"))
            .order_by(AuditRow.seq)
        )
        return [
            (code, fields if isinstance(fields, dict) else json.loads(fields))
            for code, fields in rows
        ]


async def test_a_second_active_deployment_in_one_environment_is_refused(
    database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    first = await _create(store)
    with pytest.raises(DeploymentInProgress, match=first):
        await _create(store)
    other = await _create(store, environment="staging")  # another environment is free
    await store.move(first, S.ROLLED_BACK, actor="bob", reason="changed my mind")
    again = await _create(store)  # a finished deployment no longer blocks
    assert {d.id for d in await store.active()} == {other, again}
    releases = {d.release_id for d in await store.recent()}
    assert len(releases) == 1  # one release row for the same triple


async def test_the_database_itself_refuses_two_active_rows_for_one_environment(
    database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    existing = await store.get(await _create(store))
    now = datetime.now(UTC)
    insert = text(
        "INSERT INTO deployments (id, environment, release_id, strategy, state, created_by,"
        " required_approvals, created_at, updated_at) VALUES (:id, 'prod', :release, 'canary',"
        " 'created', 'mallory', 0, :now, :now)"
    )
    with pytest.raises(IntegrityError):
        async with database.write() as session:
            await session.execute(
                insert, {"id": "x" * 36, "release": existing.release_id, "now": now}
            )


async def test_pre_checks_then_the_gate_then_two_other_people_open_it(
    database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    deployment_id = await _create(store)
    deployment, results = await run_pre_checks(store, deployment_id, [SchemaServable(database)])
    assert [r.ok for r in results] == [True]
    assert deployment.state is S.AWAITING_APPROVAL
    with pytest.raises(ApprovalRefused, match="creator"):
        await store.approve(deployment_id, PROD, approver="alice")
    once = await store.approve(deployment_id, PROD, approver="bob")
    assert (once.state, once.approvals) == (S.AWAITING_APPROVAL, ("bob",))
    with pytest.raises(ApprovalRefused, match="already"):
        await store.approve(deployment_id, PROD, approver="bob")
    opened = await store.approve(deployment_id, PROD, approver="carol")
    assert opened.state is S.ROLLING
    with pytest.raises(ApprovalRefused, match="not awaiting"):
        await store.approve(deployment_id, PROD, approver="dave")
    promoted = await store.move(deployment_id, S.PROMOTED, actor="bob")
    assert promoted.state is S.PROMOTED
    assert promoted.finished_at is not None

    history = [(t.from_state, t.to_state, t.actor) for t in await store.history(deployment_id)]
    assert history == [
        (None, S.CREATED, "alice"),
        (S.CREATED, S.PRE_CHECKS, "keel"),
        (S.PRE_CHECKS, S.AWAITING_APPROVAL, "keel"),
        (S.AWAITING_APPROVAL, S.ROLLING, "keel"),
        (S.ROLLING, S.PROMOTED, "bob"),
    ]
    audited = await _audited(database)
    moves = [
        (f["from_state"], f["to_state"])
        for code, f in audited
        if code == "deployment.state_changed"
    ]
    assert moves == [(t[0].value if t[0] else None, t[1].value) for t in history]
    approvals = [f["by"] for code, f in audited if code == "deployment.approved"]
    assert approvals == ["bob", "carol"]


async def test_no_approval_needed_goes_straight_to_rolling(
    database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    deployment_id = await _create(store, environment="dev", required=0)
    deployment, _ = await run_pre_checks(store, deployment_id, [SchemaServable(database)])
    assert deployment.state is S.ROLLING


class _Broken:
    name = "broken"

    async def run(self, deployment: object) -> object:
        raise RuntimeError("probe crashed")


async def test_a_failing_or_crashing_pre_check_fails_the_deployment(
    database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    ahead = DeploymentStore(database, store.auditor)
    old = Release(version="1.0.0", git_sha="b" * 40, migration_head="0013")
    stale = await ahead.create(
        old, environment="prod", strategy=Strategy.CANARY, created_by="alice", required_approvals=0
    )
    deployment, results = await run_pre_checks(store, stale.id, [SchemaServable(database)])
    assert deployment.state is S.FAILED
    assert "cannot serve" in (deployment.reason or "")
    assert [r.ok for r in results] == [False]

    crashing_id = await _create(store)
    crashed, _ = await run_pre_checks(store, crashing_id, [_Broken()])  # type: ignore[list-item]
    assert crashed.state is S.FAILED
    assert "probe crashed" in (crashed.reason or "")


async def test_moves_outside_the_table_are_refused_and_change_nothing(
    database: Database, settings: Settings
) -> None:
    store = deployment_store(database, settings)
    deployment_id = await _create(store)
    with pytest.raises(IllegalTransition):
        await store.move(deployment_id, S.ROLLING, actor="bob")  # skipping pre-checks and gate
    with pytest.raises(IllegalTransition):
        await store.move(deployment_id, S.PROMOTED, actor="bob")
    assert (await store.get(deployment_id)).state is S.CREATED
    assert len(await store.history(deployment_id)) == 1
    with pytest.raises(InvalidOperator):
        await store.move(deployment_id, S.ROLLED_BACK, actor="bob@example.com")
    await store.move(deployment_id, S.ROLLED_BACK, actor="bob")
    with pytest.raises(IllegalTransition):
        await store.move(deployment_id, S.ROLLED_BACK, actor="bob")  # terminal stays terminal

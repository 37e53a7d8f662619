"""The migration cycle of a rollout on SQLite and PostgreSQL, with sample revisions on top of
the real head: expand before traffic, contract only after promotion (both audited as steps of
the deployment), and no rollback to a release a contract revision has left behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.support.deploys import deployment_store, walked_deployment
from tests.support.migration_samples import HEAD, expand_then_contracts, migrations_copy
from tests.support.migration_samples import options as runner_options
from typer.testing import CliRunner

from keel.cli import app
from keel.db.engine import Database
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.deploy import DeploymentState, DeploymentStore, Release
from keel.deploy.errors import MigrationPhaseRefused, RollbackRefused
from keel.deploy.migration_cycle import MigrationCycle
from keel.migrations.runtime.runner import apply
from keel.migrations.runtime.schema import current_revision
from keel.migrations.script import graph
from keel.settings import Settings

S = DeploymentState


def _samples(tmp_path: Path) -> Path:
    return expand_then_contracts(migrations_copy(tmp_path))


async def _deployment(store: DeploymentStore, head: str, target: S, sha: str) -> str:
    release = Release("2.0.0" if head != HEAD else "1.0.0", sha * 40, head)
    return await walked_deployment(store, release, target)


async def _migration_audit(database: Database) -> list[dict[str, object]]:
    async with database.read() as session:
        rows = await session.scalars(
            select(AuditRow.fields)
            .where(AuditRow.code == "migration.applied")
            .order_by(AuditRow.seq)
        )
        return [fields if isinstance(fields, dict) else json.loads(fields) for fields in rows]


@asynccontextmanager
async def _cycle(
    database_url: str, settings: Settings, location: Path, tmp_path: Path
) -> AsyncIterator[tuple[Database, DeploymentStore, MigrationCycle]]:
    """Its own connections for each ``asyncio.run`` (the CLI runs its own loop in between)."""
    database = Database(database_url)
    try:
        store = deployment_store(database, settings)
        yield database, store, MigrationCycle(store, runner_options(location, tmp_path))
    finally:
        await database.dispose()


async def _expand_then_contract_too_early(
    database_url: str, settings: Settings, location: Path, tmp_path: Path
) -> str:
    async with _cycle(database_url, settings, location, tmp_path) as (database, store, cycle):
        await _deployment(store, HEAD, S.PROMOTED, "a")
        new = await _deployment(store, "c004", S.ROLLING, "b")
        with pytest.raises(MigrationPhaseRefused, match="only after promotion"):
            await cycle.contract(new)
        assert await current_revision(database) == HEAD

        assert await cycle.expand(new) == ("s002",)
        assert await current_revision(database) == "s002"
        await cycle.check_rollback(new)  # an expand revision leaves the baseline servable

        await apply(database_url, target="c003", options=cycle.options)  # by hand, too early
        with pytest.raises(RollbackRefused, match=f"contract revision c003 ran after .*{HEAD}"):
            await cycle.check_rollback(new)
        return new


async def _promote_then_contract(
    database_url: str, settings: Settings, location: Path, tmp_path: Path, new: str
) -> None:
    async with _cycle(database_url, settings, location, tmp_path) as (database, store, cycle):
        assert (await store.get(new)).state is S.ROLLING  # the refused rollback moved nothing
        await store.move(new, S.PROMOTED, actor="keel")
        with pytest.raises(MigrationPhaseRefused, match="is promoted"):
            await cycle.expand(new)
        assert await cycle.contract(new) == ("c004",)
        assert await current_revision(database) == "c004"
        via = f"deploy:{new}"
        assert await _migration_audit(database) == [
            {"from_revision": HEAD, "to_revision": "s002", "phase": "expand", "via": via},
            {"from_revision": "c003", "to_revision": "c004", "phase": "contract", "via": via},
        ]


def test_expand_before_traffic_contract_after_promotion_and_no_rollback_past_a_contract(
    database_url: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = _samples(tmp_path)
    new = asyncio.run(_expand_then_contract_too_early(database_url, settings, location, tmp_path))

    monkeypatch.setattr(graph, "SCRIPT_LOCATION", location)
    env = {"KEEL_DATABASE_URL": database_url, "KEEL_MIGRATION_BACKUP_DIR": str(tmp_path)}
    refused = CliRunner().invoke(app, ["deploy", "rollback", new], env=env)
    assert refused.exit_code == 1, refused.output
    assert "contract revision c003" in refused.output

    asyncio.run(_promote_then_contract(database_url, settings, location, tmp_path, new))

"""A promoted deployment's contract phase on SQLite and PostgreSQL, with a sample contract
revision on top of the real head: it waits when deferred and while an old process still
runs, fails (the
runner rolls the revision back) with the reason kept on the deployment and shown by
``keel deploy status`` and ``show``, and an operator's ``keel deploy migrate --phase
contract`` runs it again to ``applied``; every move of the phase is audited."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.support.deploys import deployment_store, walked_deployment
from tests.support.migration_samples import CONTRACT, HEAD, add_revision, migrations_copy
from tests.support.migration_samples import options as runner_options
from tests.support.processes import free_port
from typer.testing import CliRunner

from keel.cli import app
from keel.db.engine import Database
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.deploy import ContractPhase, DeploymentState, Release
from keel.deploy.groups import VersionGroup
from keel.deploy.migration_cycle import MigrationCycle
from keel.deploy.post_promotion import ContractStep
from keel.deploy.processes import ServeProcess, Source, is_ours
from keel.migrations.runtime.schema import current_revision
from keel.migrations.script import graph
from keel.settings import Settings

C = ContractPhase

# A contract revision whose first version fails half-way (after changing the schema).
FAILING_CONTRACT = CONTRACT.replace(
    '    op.drop_column("users", "display_name")\n',
    '    op.drop_column("users", "display_name")\n'
    '    op.execute("INSERT INTO no_such_table (id) VALUES (1)")\n',
)


@contextmanager
def _old_process() -> Iterator[VersionGroup]:
    """A process that looks like an old version's ``keel serve`` and outlived its drain."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "serve", "--port", str(port)]
    )
    process = ServeProcess(child.pid, port)
    try:
        for _ in range(200):  # until it has exec'd (before, /proc shows the parent's arguments)
            if is_ours(process):
                break
            time.sleep(0.01)
        yield VersionGroup("g0", Source.current_checkout(), (process,))
    finally:
        child.kill()
        child.wait(timeout=10)


@asynccontextmanager
async def _cycle(
    database_url: str, settings: Settings, location: Path, tmp_path: Path
) -> AsyncIterator[MigrationCycle]:
    """Its own connections for each ``asyncio.run`` (the CLI runs its own loop in between)."""
    database = Database(database_url)
    try:
        yield MigrationCycle(
            deployment_store(database, settings), runner_options(location, tmp_path)
        )
    finally:
        await database.dispose()


async def _waits_then_fails(
    database_url: str, settings: Settings, location: Path, tmp_path: Path
) -> str:
    async with _cycle(database_url, settings, location, tmp_path) as cycle:
        store = cycle.store
        promoted = await store.get(
            await walked_deployment(store, Release("2.0.0", "b" * 40, "c101"))
        )
        deferred = await ContractStep(cycle, deferred=True).run(promoted, retired=[])
        assert deferred.contract_phase is C.PENDING
        assert "deferred by the operator" in (deferred.contract_reason or "")
        step = ContractStep(cycle)
        with _old_process() as old:
            waiting = await step.run(promoted, retired=[old])
            pid = old.processes[0].pid
        assert waiting.contract_phase is C.PENDING
        assert f"pid {pid}" in (waiting.contract_reason or "")
        assert await current_revision(cycle.store.database) == HEAD  # nothing ran under it

        failed = await step.run(promoted, retired=[old])  # the old process is gone now
        assert failed.state is DeploymentState.PROMOTED  # the release still serves
        assert failed.contract_phase is C.FAILED
        assert "no_such_table" in (failed.contract_reason or "")
        assert await current_revision(cycle.store.database) == HEAD  # rolled back, whole
        return promoted.id


async def _phase_audit(database_url: str) -> list[tuple[object, ...]]:
    database = Database(database_url)
    try:
        async with database.read() as session:
            rows = await session.scalars(
                select(AuditRow.fields)
                .where(AuditRow.code == "deployment.contract_phase_changed")
                .order_by(AuditRow.seq)
            )
            found = [item if isinstance(item, dict) else json.loads(item) for item in rows]
    finally:
        await database.dispose()
    return [(item["from_phase"], item["to_phase"], item["by"]) for item in found]


def test_a_failed_contract_phase_is_kept_on_the_walked_deployment_and_can_be_run_again(
    database_url: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = migrations_copy(tmp_path)
    revision = add_revision(location, "c101", FAILING_CONTRACT)
    deployment_id = asyncio.run(_waits_then_fails(database_url, settings, location, tmp_path))

    monkeypatch.setattr(graph, "SCRIPT_LOCATION", location)
    env = {"KEEL_DATABASE_URL": database_url, "KEEL_MIGRATION_BACKUP_DIR": str(tmp_path)}
    runner = CliRunner()
    status = runner.invoke(app, ["deploy", "status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    outstanding = json.loads(status.output)["contracts_outstanding"]
    assert [(item["id"], item["contract_phase"]) for item in outstanding] == [
        (deployment_id, "failed")
    ]
    shown = runner.invoke(app, ["deploy", "show", deployment_id], env=env)
    assert "contract phase: failed" in shown.output, shown.output

    # The operator fixes the revision and runs the phase again.
    revision.write_text(revision.read_text().replace(FAILING_CONTRACT, CONTRACT))
    rerun = runner.invoke(
        app, ["deploy", "migrate", deployment_id, "--phase", "contract", "--by", "carol"], env=env
    )
    assert rerun.exit_code == 0, rerun.output
    assert "contract: c101" in rerun.output
    shown = runner.invoke(app, ["deploy", "show", deployment_id, "--json"], env=env)
    assert json.loads(shown.output)["contract_phase"] == "applied"
    assert json.loads(shown.output)["contract_reason"] == "applied c101"
    status = runner.invoke(app, ["deploy", "status", "--json"], env=env)
    assert json.loads(status.output)["contracts_outstanding"] == []

    assert asyncio.run(_phase_audit(database_url)) == [
        (None, "pending", "keel"),
        ("pending", "pending", "keel"),
        ("pending", "running", "keel"),
        ("running", "failed", "keel"),
        ("failed", "running", "carol"),
        ("running", "applied", "carol"),
    ]

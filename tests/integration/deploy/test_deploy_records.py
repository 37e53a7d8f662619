"""Local deployments' records in a real database (SQLite and PostgreSQL): one front per
environment, each deployment's groups by role with their processes, the walk's step, the
front following a promotion in its transaction. (Revision 0017 is checked against the models
with 0014, in test_deploy_migration.py.)"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.support.deploys import rolling_deployment

from keel import migrations
from keel.db.engine import Database
from keel.db.tables_deploy import DeployGroupRow
from keel.deploy import DeploymentState
from keel.deploy.errors import (
    DeploymentNotFound,
    FrontAlreadyRegistered,
    FrontNotRegistered,
    RecordInconsistent,
)
from keel.deploy.fronts import Front, FrontState, this_host
from keel.deploy.groups import VersionGroup
from keel.deploy.local import DeploymentRecord, LiveRecord, Step
from keel.deploy.processes import ServeProcess, Source, SourceKind, start_mark
from keel.deploy.records import DatabaseRecords
from keel.migrations.script.graph import Scripts
from keel.settings import Settings

S = DeploymentState
STARTED = datetime(2026, 12, 3, 17, 0, 0, 250_000, tzinfo=UTC)
BOOT = "5da2dbb6-fd7c-49c3-99c2-9c83ef518237"


def _group(name: str, first_pid: int, size: int = 1) -> VersionGroup:
    processes = tuple(
        ServeProcess(pid=first_pid + i, port=20_000 + first_pid + i, start_mark=f"{BOOT}/{i}")
        for i in range(size)
    )
    return VersionGroup(name, Source(SourceKind.CHECKOUT, Path("/srv/keel")), processes)


def _front(environment: str, pid: int = 4242) -> Front:
    workdir = Path(f"/srv/run-{environment}")
    return Front(
        environment=environment,
        host_name="box-1",
        workdir=workdir,
        admin_socket=workdir / "admin.sock",
        config_path=workdir / "haproxy.cfg",
        bind_host="127.0.0.1",
        bind_port=8000,
        pid=pid,
        start_mark=f"{BOOT}/{pid}",
        started_at=STARTED,
    )


def _live(front: Front, group: VersionGroup) -> LiveRecord:
    return LiveRecord(front.admin_socket, group, front.pid, front)


async def _states(database: Database) -> dict[tuple[str | None, str], str]:
    """Each group row's state, by (deployment, name)."""
    async with database.read() as session:
        rows = await session.execute(
            select(DeployGroupRow.deployment_id, DeployGroupRow.name, DeployGroupRow.state)
        )
        return {(deployment, name): state for deployment, name, state in rows}


async def test_one_front_per_environment_found_by_the_environment(database: Database) -> None:
    records = DatabaseRecords(database)
    first = _live(_front("prod"), _group("g0", 100, size=2))
    await records.write_live("prod", first)
    assert await records.read_live("prod") == first
    assert await records.read_live("staging") is None

    # Registering again (its HAProxy was gone) replaces the front; another environment has its own.
    again = _live(_front("prod", pid=5151), _group("g0", 300))
    await records.write_live("prod", again)
    await records.write_live("staging", _live(_front("staging"), _group("g0", 400)))
    assert await records.read_live("prod") == again
    fronts = await records.fronts()
    assert [(front.environment, front.pid, group.processes[0].pid) for front, group in fronts] == [
        ("prod", 5151, 300),
        ("staging", 4242, 400),
    ]


@pytest.fixture
def running_front(tmp_path: Path) -> Iterator[Front]:
    """A front whose "HAProxy" runs here: a process named haproxy with ``-f CONFIG``."""
    config = tmp_path / "haproxy.cfg"
    sleeper = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(60)'"
    process = subprocess.Popen(
        ["/bin/bash", "-c", f"exec -a haproxy {sleeper} -f {shlex.quote(str(config))}"]
    )
    front = replace(_front("prod", pid=process.pid), host_name=this_host(), config_path=config)
    try:
        for _ in range(200):  # until bash has exec'd into it
            front = replace(front, start_mark=start_mark(process.pid) or "")
            if front.state() is FrontState.SERVING:
                break
            time.sleep(0.02)
        assert front.state() is FrontState.SERVING
        yield front
    finally:
        process.kill()
        process.wait(timeout=10)


async def test_a_front_whose_haproxy_still_runs_is_not_replaced(
    database: Database, running_front: Front
) -> None:
    records = DatabaseRecords(database)
    first = _live(running_front, _group("g0", 1))
    await records.write_live("prod", first)
    with pytest.raises(FrontAlreadyRegistered, match="already has a front"):
        await records.write_live("prod", _live(_front("prod", pid=5151), _group("g0", 2)))
    await records.write_live("prod", replace(first, group=_group("g1", 3)))  # the same front
    assert await records.read_live("prod") == replace(first, group=_group("g1", 3))


async def test_a_live_group_alone_moves_a_registered_front_and_needs_one(
    database: Database,
) -> None:
    records = DatabaseRecords(database)
    with pytest.raises(FrontNotRegistered):
        await records.write_live("prod", LiveRecord(Path("/x.sock"), _group("g0", 1)))
    front = _front("prod")
    await records.write_live("prod", _live(front, _group("g0", 1)))
    moved = LiveRecord(front.admin_socket, _group("g1", 7))
    await records.write_live("prod", moved)
    assert await records.read_live("prod") == _live(front, _group("g1", 7))


async def test_a_deployments_record_reads_back_as_written_and_promotion_moves_the_front(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    records = DatabaseRecords(database)
    front = _front("prod")
    old, new = _group("g0", 100, size=2), _group("gnew", 200)
    await records.write_live("prod", _live(front, old))
    assert await records.read_record(deployment_id) is None

    record = DeploymentRecord(deployment_id, front.admin_socket, old, new)
    await records.write_record(record)
    assert await records.read_record(deployment_id) == record
    stepped = replace(
        record,
        step=Step(25, "inconclusive", 12, 40, ("canary served 12 requests, fewer than 20",), 3),
    )
    await records.write_record(stepped)
    assert await records.read_record(deployment_id) == stepped

    # The move to promoted points the front at the new group, in the move's own transaction.
    await store.move(deployment_id, S.PROMOTED, actor="keel")
    live = await records.read_live("prod")
    assert live is not None
    assert (live.group, live.front) == (new, front)

    # The runner then records the winner as baseline and the old group retired.
    promoted = replace(stepped, baseline=new, candidate=None, retired=(old.name,))
    await records.write_record(promoted)
    assert await records.read_record(deployment_id) == promoted
    assert await _states(database) == {
        (None, "g0"): "retired",  # the front's first group: the same processes
        (deployment_id, "g0"): "retired",
        (deployment_id, "gnew"): "serving",
    }
    await records.write_live("prod", replace(live, group=new))  # what the runner writes next
    assert await records.read_live("prod") == live


async def test_before_the_records_revision_nothing_is_recorded_and_a_promotion_still_works(
    database: Database, settings: Settings
) -> None:
    """Status, rollback and promotion run before a release's expand revisions have: no front
    to read or move, no record, no failure."""
    (revision,) = [item for item in Scripts().all() if item.revision == "0017"]
    assert revision.down_revision is not None
    await migrations.downgrade(database, revision.down_revision)
    store, deployment_id = await rolling_deployment(database, settings)
    records = DatabaseRecords(database)
    assert await records.read_record(deployment_id) is None
    assert await records.read_live("prod") is None
    assert await records.fronts() == []
    promoted = await store.move(deployment_id, S.PROMOTED, actor="keel")
    assert promoted.state is S.PROMOTED


async def test_a_rolled_back_deployment_leaves_the_front_on_its_baseline(
    database: Database, settings: Settings
) -> None:
    store, deployment_id = await rolling_deployment(database, settings)
    records = DatabaseRecords(database)
    front, old, new = _front("prod"), _group("g0", 100), _group("gnew", 200)
    await records.write_live("prod", _live(front, old))
    await records.write_record(DeploymentRecord(deployment_id, front.admin_socket, old, new))
    await store.move(deployment_id, S.ROLLED_BACK, actor="carol")
    await records.write_record(
        DeploymentRecord(deployment_id, front.admin_socket, old, new, retired=(new.name,))
    )
    live = await records.read_live("prod")
    assert live is not None
    assert live.group == old
    assert (await _states(database))[(deployment_id, "gnew")] == "retired"


async def test_a_record_is_refused_for_no_deployment_or_retiring_a_group_it_never_held(
    database: Database, settings: Settings
) -> None:
    _, deployment_id = await rolling_deployment(database, settings)
    records = DatabaseRecords(database)
    group = _group("g0", 1)
    with pytest.raises(DeploymentNotFound):
        await records.write_record(DeploymentRecord("0" * 36, Path("/x.sock"), group))
    with pytest.raises(RecordInconsistent, match="ghost"):
        await records.write_record(
            DeploymentRecord(deployment_id, Path("/x.sock"), group, retired=("ghost",))
        )
    assert await records.read_record(deployment_id) is None  # nothing of it was written


async def test_records_survive_another_store_instance(
    database: Database, database_url: str, settings: Settings
) -> None:
    """What one shell wrote, another shell (its own connection pool) reads."""
    _, deployment_id = await rolling_deployment(database, settings)
    record = DeploymentRecord(
        deployment_id, Path("/r/admin.sock"), _group("g0", 1), _group("g1", 9)
    )
    await DatabaseRecords(database).write_record(record)
    other = Database(database_url)
    try:
        assert await DatabaseRecords(other).read_record(deployment_id) == record
    finally:
        await other.dispose()


async def test_a_fresh_baseline_reads_back_in_its_role_and_runs_the_baselines_release(
    database: Database, settings: Settings
) -> None:
    store, first = await rolling_deployment(database, settings)
    records = DatabaseRecords(database)
    front = _front("prod")
    old, new = _group("g0", 100), _group("g1", 200)
    await records.write_live("prod", _live(front, old))
    await records.write_record(DeploymentRecord(first, front.admin_socket, old, new))
    await store.move(first, S.PROMOTED, actor="keel")
    _, second = await rolling_deployment(database, settings)

    fresh = _group("bfresh", 300)
    record = DeploymentRecord(
        second, front.admin_socket, new, _group("g2", 400), fresh_baseline=fresh
    )
    await records.write_record(record)
    assert await records.read_record(second) == record
    async with database.read() as session:
        releases = dict(
            (await session.execute(select(DeployGroupRow.name, DeployGroupRow.release_id))).all()
        )
    first_release = (await store.get(first)).release_id
    assert releases["g1"] == releases["bfresh"] == first_release  # the baseline's release
    assert releases["g2"] == (await store.get(second)).release_id

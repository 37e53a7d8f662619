"""The safe migration runner against real SQLite and PostgreSQL databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.app import seed_world
from tests.support.migration_samples import (
    CONCURRENT_INDEX,
    FAILING,
    HEAD,
    REAL_REVISIONS,
    SAFE_EXPAND,
    add_revision,
    migrations_copy,
    options,
    snapshot,
)

from keel import migrations
from keel.db.engine import Database
from keel.domain import orgs
from keel.migrations.runtime import history
from keel.migrations.runtime.dryrun import SQLITE_LOCK
from keel.migrations.runtime.history import Action, Outcome

WITHOUT_HISTORY = frozenset({history.TABLE_NAME})


async def _seed(url: str) -> None:
    database = Database(url)
    try:
        await seed_world(database)
    finally:
        await database.dispose()


async def test_a_failing_revision_leaves_schema_and_data_exactly_as_they_were(
    database_url: str, tmp_path: Path
) -> None:
    await _seed(database_url)
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", FAILING)
    before = await snapshot(database_url, exclude=WITHOUT_HISTORY)

    with pytest.raises(migrations.MigrationFailed) as failure:
        await migrations.apply(database_url, options=options(location, tmp_path))

    assert failure.value.extensions["schema_at"] == HEAD
    assert await snapshot(database_url, exclude=WITHOUT_HISTORY) == before
    found = await migrations.status(database_url, options=options(location, tmp_path))
    assert found.current == HEAD
    failed = [step for step in found.recent if step.outcome is Outcome.FAILED]
    assert [step.revision for step in failed] == ["s002"]
    assert failed[0].error is not None
    assert "no_such_table" in failed[0].error


async def test_revisions_before_the_failing_one_stay_applied(
    database_url: str, tmp_path: Path
) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    add_revision(location, "s003", FAILING, down="s002")

    with pytest.raises(migrations.MigrationFailed):
        await migrations.apply(database_url, options=options(location, tmp_path))

    columns = (await snapshot(database_url))["users"]["columns"]
    names = {name for name, _type, _nullable in columns}
    assert "nickname" in names
    assert "half_done" not in names
    assert (await migrations.status(database_url, options=options(location, tmp_path))).current == (
        "s002"
    )


async def test_an_applied_revision_that_was_edited_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    location = migrations_copy(tmp_path)
    path = add_revision(location, "s002", SAFE_EXPAND)
    await migrations.apply(database_url, options=options(location, tmp_path))
    add_revision(location, "s003", SAFE_EXPAND.replace("nickname", "alias"), down="s002")
    path.write_text(path.read_text() + "\n# an innocent-looking edit\n")

    with pytest.raises(migrations.ChecksumMismatch) as refused:
        await migrations.apply(database_url, options=options(location, tmp_path))

    assert refused.value.extensions["revisions"] == ["s002"]
    found = await migrations.status(database_url, options=options(location, tmp_path))
    assert found.current == "s002"
    assert found.edited == ["s002"]
    assert (found.recent[0].revision, found.recent[0].outcome) == ("s002", Outcome.REFUSED)


async def test_dry_run_leaves_no_trace(database_url: str, tmp_path: Path) -> None:
    await _seed(database_url)
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    before = await snapshot(database_url)

    report = await migrations.dry_run(database_url, options=options(location, tmp_path))

    assert [trial.revision for trial in report.revisions] == ["s002"]
    assert report.start_revision == HEAD
    assert report.target_revision == "s002"
    if database_url.startswith("postgresql"):
        assert "users: AccessExclusiveLock" in report.revisions[0].locks
    else:
        assert report.revisions[0].locks == [SQLITE_LOCK]
    assert await snapshot(database_url) == before
    assert not (tmp_path / "backups").exists()


async def test_backup_then_restore_gives_back_identical_rows(
    database_url: str, tmp_path: Path
) -> None:
    await _seed(database_url)
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    before = await snapshot(database_url, exclude=WITHOUT_HISTORY)

    applied = await migrations.apply(database_url, options=options(location, tmp_path))
    assert applied.backup_file is not None
    assert applied.backup_file.exists()
    database = Database(database_url)
    try:
        await seed_world_again(database)
    finally:
        await database.dispose()
    assert await snapshot(database_url, exclude=WITHOUT_HISTORY) != before

    restored = await migrations.restore(
        database_url, applied.backup_file, options=options(location, tmp_path)
    )

    assert restored.end_revision == HEAD
    assert await snapshot(database_url, exclude=WITHOUT_HISTORY) == before
    found = await migrations.status(database_url, options=options(location, tmp_path))
    actions = [step.action for step in found.recent]
    assert actions[0] is Action.RESTORE
    assert Action.UPGRADE in actions  # history written after the backup survives the restore


async def seed_world_again(database: Database) -> None:
    async with database.write() as session:
        await orgs.create_org(session, "Org C")


async def test_rollback_downgrades_with_a_backup_and_records_every_step(
    database_url: str, tmp_path: Path
) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    heard: list[migrations.Step] = []
    listening = options(location, tmp_path, listeners=(heard.append,))
    await migrations.apply(database_url, options=listening)
    result = await migrations.rollback(database_url, to=HEAD, options=listening)

    assert result.end_revision == HEAD
    assert result.backup_file is not None
    assert result.backup_file.exists()
    assert [(s.action, s.revision, s.outcome) for s in heard] == [
        *[(Action.BASELINE, revision, Outcome.RECORDED) for revision in REAL_REVISIONS],
        (Action.UPGRADE, "s002", Outcome.APPLIED),
        (Action.DOWNGRADE, "s002", Outcome.ROLLED_BACK),
    ]
    assert all(step.actor == "test" for step in heard)
    names = {name for name, _t, _n in (await snapshot(database_url))["users"]["columns"]}
    assert "nickname" not in names


async def test_apply_with_nothing_pending_takes_no_backup(
    database_url: str, tmp_path: Path
) -> None:
    location = migrations_copy(tmp_path)

    result = await migrations.apply(database_url, options=options(location, tmp_path))

    assert result.start_revision == result.end_revision == HEAD
    assert result.backup_file is None
    assert not (tmp_path / "backups").exists()


async def test_a_revision_outside_a_transaction_can_build_an_index_concurrently(
    database_url: str, tmp_path: Path
) -> None:
    await _seed(database_url)
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    add_revision(location, "s003", CONCURRENT_INDEX, down="s002")

    report = await migrations.dry_run(database_url, options=options(location, tmp_path))
    assert [trial.revision for trial in report.revisions] == ["s002"]
    assert len(report.notes) == 1
    assert "s003" in report.notes[0]

    result = await migrations.apply(database_url, options=options(location, tmp_path))

    assert result.end_revision == "s003"
    indexes = (await snapshot(database_url))["users"]["indexes"]
    assert ("ix_users_display_name", ("display_name",), False) in indexes
    undone = await migrations.rollback(database_url, to="s002", options=options(location, tmp_path))
    assert undone.end_revision == "s002"


async def test_a_revision_that_cannot_get_its_table_lock_gives_up_and_rolls_back(
    database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("lock_timeout is PostgreSQL's; SQLite has one writer and busy_timeout")
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    blocker = Database(database_url)
    try:
        async with blocker.engine.connect() as reader:
            # An open transaction that has read users holds ACCESS SHARE until it ends,
            # which ALTER TABLE's ACCESS EXCLUSIVE must wait for.
            await reader.exec_driver_sql("SELECT count(*) FROM users")
            with pytest.raises(migrations.MigrationFailed) as failure:
                await migrations.apply(
                    database_url, options=options(location, tmp_path, lock_timeout_seconds=0.2)
                )
            await reader.rollback()
    finally:
        await blocker.dispose()

    assert "lock timeout" in failure.value.detail
    assert failure.value.extensions["schema_at"] == HEAD
    done = await migrations.apply(database_url, options=options(location, tmp_path))
    assert done.end_revision == "s002"

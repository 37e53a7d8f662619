"""The migration and smoke pre-checks, against sample revisions on top of the real head and a
real HTTP server: a dangerous or failing revision stops the deployment before any traffic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.support.migration_samples import (
    DANGEROUS,
    FAILING,
    SAFE_EXPAND,
    add_revision,
    migrations_copy,
    options,
)
from tests.support.versions import VersionServer

from keel.db.engine import Database
from keel.deploy import (
    Deployment,
    DeploymentState,
    ExpandBeforeTraffic,
    MigrationsRehearsed,
    Release,
    SmokeTest,
    Strategy,
)
from keel.migrations.runtime.schema import current_revision

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def _deployment(head: str) -> Deployment:
    return Deployment(
        id="d1",
        environment="prod",
        release_id="r1",
        release=Release("2.0.0", "a" * 40, head),
        strategy=Strategy.CANARY,
        state=DeploymentState.PRE_CHECKS,
        created_by="alice",
        required_approvals=0,
        approvals=(),
        reason=None,
        created_at=NOW,
        updated_at=NOW,
        finished_at=None,
    )


@pytest.fixture
def backend() -> str:
    """SQLite: the dry run and the lint are each tested on both backends in their own suites."""
    return "sqlite"


async def test_pending_revisions_are_linted_and_rehearsed_and_nothing_changes(
    database: Database, tmp_path: Path
) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    add_revision(location, "s003", DANGEROUS, down="s002")
    add_revision(location, "s004", FAILING, down="s002")
    check = MigrationsRehearsed(database, options(location, tmp_path))
    before = await current_revision(database)

    assert (await check.run(_deployment(before or "base"))).detail == "no pending revisions"
    good = await check.run(_deployment("s002"))
    assert good.ok, good.detail
    assert "s002" in good.detail
    dangerous = await check.run(_deployment("s003"))
    assert not dangerous.ok
    assert dangerous.detail.startswith("lint:")
    assert "s003" in dangerous.detail
    with pytest.raises(Exception, match="no_such_table"):  # run_pre_checks turns it into a failure
        await check.run(_deployment("s004"))
    assert await current_revision(database) == before


async def test_the_smoke_test_wants_a_200_from_the_new_version() -> None:
    with VersionServer("green") as green:
        answered = await SmokeTest(f"http://127.0.0.1:{green.port}/").run(_deployment("0014"))
    assert answered.ok
    unreachable = await SmokeTest("http://127.0.0.1:9/").run(_deployment("0014"))
    assert not unreachable.ok


CONTRACT = """# keel-kind: contract


def upgrade() -> None:
    op.drop_column("users", "display_name")


def downgrade() -> None:
    op.add_column("users", sa.Column("display_name", sa.String(200), nullable=True))
"""


async def test_only_expand_revisions_run_before_traffic_and_none_may_follow_a_contract(
    database: Database, tmp_path: Path
) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    add_revision(location, "c003", CONTRACT, down="s002")
    add_revision(location, "s004", SAFE_EXPAND.replace("nickname", "pronouns"), down="c003")
    check = ExpandBeforeTraffic(database, script_location=location)

    expand_only = await check.run(_deployment("s002"))
    assert (expand_only.ok, expand_only.detail) == (
        True,
        "before traffic: s002; after promotion: nothing",
    )
    then_contract = await check.run(_deployment("c003"))
    assert (then_contract.ok, then_contract.detail) == (
        True,
        "before traffic: s002; after promotion: c003",
    )
    expand_after_contract = await check.run(_deployment("s004"))
    assert not expand_after_contract.ok
    assert "s004 come after contract revision c003" in expand_after_contract.detail

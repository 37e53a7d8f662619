"""A release serves a schema behind its head by contract revisions only: ``keel serve``'s
start check and ``/ready``'s schema check accept it (a deploy runs those revisions after the
release is promoted), and refuse a schema still missing an expand revision."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.migration_samples import HEAD, SAFE_EXPAND, add_revision, migrations_copy
from tests.support.migration_samples import options as runner_options

from keel.db.engine import Database
from keel.errors import SchemaBehind
from keel.migrations import apply, behind_by_contract_only, require_head
from keel.migrations.script import graph
from keel.migrations.script.graph import Scripts
from keel.observe.checks import schema_check
from keel.observe.health import Status

CONTRACT = """# keel-kind: contract


def upgrade() -> None:
    op.drop_column("users", "display_name")


def downgrade() -> None:
    op.add_column("users", sa.Column("display_name", sa.String(200), nullable=True))
"""


def _samples(tmp_path: Path) -> Path:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    add_revision(location, "c003", CONTRACT, down="s002")
    add_revision(location, "c004", CONTRACT.replace("display_name", "role"), down="c003")
    return location


def test_only_pending_contract_revisions_leave_a_schema_servable(tmp_path: Path) -> None:
    scripts = Scripts(_samples(tmp_path))
    assert not behind_by_contract_only(HEAD, scripts)  # s002, an expand revision, is missing
    assert behind_by_contract_only("s002", scripts)
    assert behind_by_contract_only("c003", scripts)
    assert not behind_by_contract_only("c004", scripts)  # at the head: not behind at all
    assert not behind_by_contract_only(None, scripts)
    assert not behind_by_contract_only("not-a-revision", scripts)


async def test_serve_and_ready_accept_a_schema_before_the_contract_revisions(
    database: Database, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = _samples(tmp_path)
    monkeypatch.setattr(graph, "SCRIPT_LOCATION", location)
    check = schema_check(database)

    with pytest.raises(SchemaBehind, match=f"at {HEAD}, the code needs c004"):
        await require_head(database)
    assert (await check.probe()).status is Status.FAIL

    await apply(database_url, target="s002", options=runner_options(location, tmp_path))
    await require_head(database)
    ready = await check.probe()
    assert ready.status is Status.PASS
    assert ready.value == "s002"
    assert "contract revisions" in (ready.output or "")

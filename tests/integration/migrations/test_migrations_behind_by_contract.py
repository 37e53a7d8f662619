"""A release serves a schema behind its head by contract revisions only: ``keel serve``'s
start check and ``/ready``'s schema check accept it (a deploy runs those revisions after the
release is promoted), and refuse a schema still missing an expand revision."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.migration_samples import HEAD, expand_then_contracts, migrations_copy
from tests.support.migration_samples import options as runner_options

from keel.db.engine import Database
from keel.errors import SchemaBehind
from keel.migrations import apply, behind_by_contract_only, require_head
from keel.migrations.script import graph
from keel.migrations.script.graph import Scripts
from keel.observe.checks import schema_check
from keel.observe.health import Status


def _samples(tmp_path: Path) -> Path:
    return expand_then_contracts(migrations_copy(tmp_path))


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

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("a probe read the scripts: they are read once, when it is built")

    # Reading them imports every revision file: under load, longer than the probe may take.
    monkeypatch.setattr(graph.Scripts, "__init__", unread)
    ready = await check.probe()
    assert ready.status is Status.PASS
    assert ready.value == "s002"
    assert "contract revisions" in (ready.output or "")

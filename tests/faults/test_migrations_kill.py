"""A migrator killed mid-revision: the revision vanishes, the lock is freed, and the next
run applies it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.migration_samples import (
    GATED,
    HEAD,
    add_revision,
    migrations_copy,
    options,
    snapshot,
)

from keel import migrations

pytestmark = pytest.mark.fault

APPLY = """
import asyncio, sys
from pathlib import Path
from keel import migrations
url, location, backups = sys.argv[1:4]
options = migrations.RunnerOptions(
    script_location=Path(location), backup_dir=Path(backups), lock_wait_seconds=60, actor="doomed"
)
asyncio.run(migrations.apply(url, options=options))
"""


async def test_kill_9_during_a_revision_leaves_the_schema_and_frees_the_lock(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", GATED)
    gate = tmp_path / "gate"
    gate.mkdir()
    doomed = subprocess.Popen(
        [sys.executable, "-c", APPLY, database_url, str(location), str(tmp_path / "backups")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, KEEL_TEST_GATE=str(gate)),
    )
    try:
        deadline = time.monotonic() + 60
        while not (gate / "entries").exists():
            assert doomed.poll() is None, doomed.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the doomed apply never reached revision 0002"
            time.sleep(0.05)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.communicate(timeout=30)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(timeout=10)

    found = await migrations.status(database_url, options=options(location, tmp_path))
    assert found.current == HEAD
    columns = {name for name, _t, _n in (await snapshot(database_url))["users"]["columns"]}
    assert "gated" not in columns

    (gate / "release").write_text("go")
    monkeypatch.setenv("KEEL_TEST_GATE", str(gate))
    result = await migrations.apply(
        database_url, options=options(location, tmp_path, lock_wait_seconds=30)
    )

    assert result.end_revision == "s002"
    assert (gate / "entries").read_text().split() == [str(doomed.pid), str(os.getpid())]

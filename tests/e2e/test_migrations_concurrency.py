"""Two ``apply`` runs in two real OS processes: one applies, the other waits, then finds
nothing to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.migration_samples import GATED, HEAD, add_revision, migrations_copy

pytestmark = pytest.mark.e2e

APPLY = """
import asyncio, json, sys
from pathlib import Path
from keel import migrations
url, location, backups, actor = sys.argv[1:5]
options = migrations.RunnerOptions(
    script_location=Path(location), backup_dir=Path(backups), lock_wait_seconds=120, actor=actor
)
print("calling apply", flush=True)
result = asyncio.run(migrations.apply(url, options=options))
print(json.dumps(result.as_dict()), flush=True)
"""


def _start(
    url: str, location: Path, workdir: Path, actor: str, gate: Path
) -> subprocess.Popen[str]:
    environment = dict(os.environ, KEEL_TEST_GATE=str(gate))
    return subprocess.Popen(
        [sys.executable, "-c", APPLY, url, str(location), str(workdir / "backups"), actor],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            _out, error = process.communicate()
            pytest.fail(f"the first apply exited early: {error[-2000:]}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_concurrent_applies_serialise(database_url: str, tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", GATED)
    gate = tmp_path / "gate"
    gate.mkdir()

    first = _start(database_url, location, tmp_path, "first", gate)
    second: subprocess.Popen[str] | None = None
    try:
        _wait_for(gate / "entries", first, 60)  # the first holds the lock, inside revision 0002
        second = _start(database_url, location, tmp_path, "second", gate)
        assert second.stdout is not None
        assert second.stdout.readline().strip() == "calling apply"
        time.sleep(1.0)  # let the second reach the lock; correctness never depends on this
        assert second.poll() is None  # still waiting for the lock
        (gate / "release").write_text("go")
        first_out, first_err = first.communicate(timeout=120)
        second_out, second_err = second.communicate(timeout=120)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    applied = json.loads(first_out.strip().splitlines()[-1])
    waited = json.loads(second_out.strip().splitlines()[-1])
    assert (applied["start_revision"], applied["end_revision"]) == (HEAD, "s002")
    assert [s["revision"] for s in applied["steps"] if s["action"] == "upgrade"] == ["s002"]
    assert (waited["start_revision"], waited["end_revision"]) == ("s002", "s002")
    assert [s for s in waited["steps"] if s["action"] == "upgrade"] == []
    # Revision 0002's upgrade ran exactly once, in the first process.
    assert (gate / "entries").read_text().split() == [str(first.pid)]

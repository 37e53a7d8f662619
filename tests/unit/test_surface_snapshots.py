"""Nothing on the wire or at the command line changes unless someone means it to.

The OpenAPI document, the ``keel`` command tree and the settings (names,
environment variables, types, defaults) are compared with the snapshots
committed under ``tests/snapshots/``. A restructuring must leave all three
identical. When a change is intended, regenerate the snapshots and let the
diff be reviewed with the change:

    KEEL_REGENERATE_SNAPSHOTS=1 python -m pytest tests/unit/test_surface_snapshots.py
"""

from __future__ import annotations

import difflib
import os

import pytest

from tests.support.surface import REGENERATE, SNAPSHOTS, SURFACES, render


@pytest.mark.parametrize("filename", sorted(SURFACES))
def test_the_public_surface_matches_its_committed_snapshot(filename: str) -> None:
    live = render(SURFACES[filename]())
    path = SNAPSHOTS / filename
    if os.environ.get(REGENERATE) == "1":
        path.write_text(live, encoding="utf-8")
        return
    committed = path.read_text(encoding="utf-8")
    if live != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                live.splitlines(keepends=True),
                fromfile=f"tests/snapshots/{filename} (committed)",
                tofile=f"{filename} (live)",
                n=2,
            )
        )
        pytest.fail(
            f"{filename} differs from its committed snapshot; if the change is intended, "
            f"rerun with {REGENERATE}=1 and commit the new snapshot.\n{diff[:6000]}"
        )

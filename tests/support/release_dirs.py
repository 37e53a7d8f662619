"""A release directory of this checkout with sample revisions on its migrations, for the
on-one-machine deploy tests: a new version whose migration head is past the old one's.

``keel deploy run --from release`` runs ``venv/bin/python`` with ``src`` first on the path;
here ``src/keel`` is a copy of this checkout's package (samples written into its migrations)
and ``venv`` points at the virtualenv running the tests.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from keel.deploy.processes import Source, SourceKind
from tests.support.migration_samples import add_revision

_PACKAGE = Path(__file__).resolve().parents[2] / "src" / "keel"


@dataclass(frozen=True, slots=True)
class ReleaseDirectory:
    source: Source
    script_location: Path
    """The release's migrations (for a runner applying its revisions)."""


def release_with_revision(root: Path, revision: str, body: str) -> ReleaseDirectory:
    """This checkout as a release directory whose head is ``revision`` (on the real head)."""
    target = root / "release"
    shutil.copytree(_PACKAGE, target / "src" / "keel", ignore=shutil.ignore_patterns("__pycache__"))
    (target / "venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    location = target / "src" / "keel" / "migrations" / "script"
    add_revision(location, revision, body)
    return ReleaseDirectory(Source(SourceKind.RELEASE, target), location)


def copy_sqlite(source: Path, target: Path) -> str:
    """A consistent copy of a SQLite database other processes are writing; its URL."""
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(target)) as copy:
        original.backup(copy)
    return f"sqlite+aiosqlite:///{target}"

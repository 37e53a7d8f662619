"""A release: exactly what would run — package version, git sha and migration head.

Two builds with the same version but different commits, or the same commit
with a different set of migrations, are different releases: the triple is the
identity, and the database records each triple once. The migration head
matters to rollouts because a release can serve only a schema at or below its
own head.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from keel import __version__
from keel.migrations.script.graph import Scripts
from keel.settings import Settings

UNKNOWN_SHA = "unknown"


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    git_sha: str
    migration_head: str

    @property
    def label(self) -> str:
        return f"{self.version}+{self.git_sha[:12]}@{self.migration_head}"


def checkout_sha(checkout: Path) -> str:
    """The commit of a git checkout; ``unknown`` outside one (an unpacked release)."""
    try:
        found = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN_SHA
    sha = found.stdout.strip()
    return sha if found.returncode == 0 and sha else UNKNOWN_SHA


def current_release(
    settings: Settings, *, checkout: Path | None = None, scripts: Scripts | None = None
) -> Release:
    """The release of the code running this function.

    The git sha is ``KEEL_GIT_SHA`` when the build stamped one (the same value
    ``/version`` shows), else read from the checkout the code runs from.
    """
    sha = settings.git_sha
    if sha == UNKNOWN_SHA:
        sha = checkout_sha(checkout or Path(__file__).resolve().parents[3])
    head = (scripts or Scripts()).head or "base"
    return Release(version=__version__, git_sha=sha, migration_head=head)

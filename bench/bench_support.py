"""What several benchmarks share (run as scripts, so this sits beside them on sys.path)."""

from __future__ import annotations

import re
from pathlib import Path

import keel.guard


def unlimited_policy(directory: str | Path) -> Path:
    """The shipped rate-limit policy with every number raised out of reach.

    The limits layer still runs on every request (its cost is in every case measured,
    as in production), but the thousands of requests of a run, all from one user,
    never meet a 429.
    """
    shipped = (Path(keel.guard.__file__).parent / "default_policy.toml").read_text()
    raised = re.sub(r"^(limit|burst) = \d+", r"\1 = 50000", shipped, flags=re.MULTILINE)
    path = Path(directory) / "bench_policy.toml"
    path.write_text(raised)
    return path

"""The directory prometheus_client's multiprocess mode shares between workers.

With ``keel serve --workers N`` (N > 1) each worker writes its samples to
files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums them, whichever
worker answers. The directory must be empty when the workers start (stale
files from an earlier run would be counted again) and is removed afterwards;
the variable must be set before any worker imports prometheus_client, which
holds because workers are spawned fresh and inherit the environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def metrics_directory(workers: int) -> Iterator[Path | None]:
    """Prepare (and afterwards clean) the shared directory when serving with workers."""
    if workers <= 1:
        yield None
        return
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        _empty(directory)
        try:
            yield directory
        finally:
            _empty(directory)
        return
    directory = Path(tempfile.mkdtemp(prefix="keel-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def _empty(directory: Path) -> None:
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)

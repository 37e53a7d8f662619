"""The periodic ``storage.collect`` job removes writes abandoned for longer than
``ABANDONED_AFTER`` — by the job's clock — and leaves younger ones (possibly still
being uploaded) alone."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from keel.jobs import maintenance
from keel.jobs.registry import JobContext
from keel.storage import BlobWriter, LocalDirectoryStore
from keel.testing import ManualClock


async def unfinished_write(
    store: LocalDirectoryStore, started: datetime
) -> tuple[BlobWriter, Path]:
    before = set((store.root / "tmp").glob("*.part"))
    writer = await store.begin_write("evidence/org1")
    await writer.write(b"never committed")
    (part,) = set((store.root / "tmp").glob("*.part")) - before
    os.utime(part, (started.timestamp(), started.timestamp()))
    return writer, part


async def test_only_writes_older_than_the_threshold_are_collected(tmp_path: Path) -> None:
    clock = ManualClock()
    store = LocalDirectoryStore(tmp_path / "blobs")
    limit = maintenance.ABANDONED_AFTER
    old_writer, old = await unfinished_write(store, clock.now() - limit - timedelta(minutes=1))
    young_writer, young = await unfinished_write(store, clock.now() - limit / 2)
    resources = SimpleNamespace(store=store, clock=clock)
    context = JobContext("j1", "storage.collect", "default", 1, 1, {}, cast(Any, resources))
    try:
        await maintenance.collect_abandoned_writes(context)
        assert not old.exists()
        assert young.exists()
    finally:
        await old_writer.abort()
        await young_writer.abort()

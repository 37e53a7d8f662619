"""What the safe runner costs over a raw Alembic upgrade, from an empty database to head.

    .venv/bin/python bench/bench_migrations.py [--rounds 7] [--postgres]

Both sides run the same revisions through Alembic; `apply` adds the migration lock, the
history table, checksum verification and one explicit transaction per revision (no backup:
an empty database has nothing to back up). The order alternates between rounds. Prints the
median of each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from keel import migrations
from keel.db.engine import Database


async def _raw(url: str) -> None:
    database = Database(url)
    try:
        await migrations.upgrade(database)
    finally:
        await database.dispose()


async def _safe(url: str, workdir: Path) -> None:
    await migrations.apply(
        url, options=migrations.RunnerOptions(backup_dir=workdir / "backups", actor="bench")
    )


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def one_round(postgres: bool, workdir: Path, safe_first: bool) -> tuple[float, float]:
    timings: dict[str, float] = {}
    for runner in ("safe", "raw") if safe_first else ("raw", "safe"):
        if postgres:
            name = f"keel_bench9_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            await _admin(f'CREATE DATABASE "{name}"')
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        else:
            name = ""
            url = f"sqlite+aiosqlite:///{workdir / f'{uuid.uuid4().hex}.db'}"
        began = time.perf_counter()
        if runner == "raw":
            await _raw(url)
        else:
            await _safe(url, workdir)
        timings[runner] = time.perf_counter() - began
        if postgres:
            await _admin(f'DROP DATABASE "{name}" WITH (FORCE)')
    return timings["raw"], timings["safe"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--postgres", action="store_true")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        results = [
            asyncio.run(one_round(arguments.postgres, Path(workdir), safe_first=i % 2 == 1))
            for i in range(arguments.rounds)
        ]
    raw = statistics.median(r[0] for r in results)
    safe = statistics.median(r[1] for r in results)
    backend = "postgresql" if arguments.postgres else "sqlite"
    print(
        f"{backend}: raw upgrade median {raw * 1000:.1f} ms, safe apply median "
        f"{safe * 1000:.1f} ms, ratio {safe / raw:.2f} over {arguments.rounds} rounds"
    )


if __name__ == "__main__":
    main()

"""Keel's job queue against Procrastinate and PgQueuer on the same PostgreSQL.

Measured, for each system, in the same run, each in a fresh database of its own:

* enqueue jobs/s, one job at a time (1,000 jobs), each committed on its own — for Keel an
  ``Enqueuer`` (one autocommit statement per job on one held connection, like PgQueuer's
  ``Queries`` on the connection the bench holds for it); for Keel also ``enqueue(database, …)``
  (a pool checkout per job), ``enqueue`` in a transaction of its own, and the enqueue
  alone inside a transaction the caller has open anyway (the API's case);
* enqueue jobs/s in batches of 1,000 (10 batches);
* processing jobs/s for 10,000 no-op jobs, one worker (this process), concurrency 1 and 10;
* enqueue-to-start latency p50/p99: jobs enqueued one at a time into an idle,
  listening worker (concurrency 10), after 10 uncounted warm-up jobs; for Keel with an
  ``Enqueuer``, and again with ``enqueue(database, …)`` and with ``enqueue`` in a transaction of
  its own.

Usage::

    .venv/bin/python bench/bench_jobs.py --rounds 3 [--jobs 10000] [--only keel]
        [--part enqueue --part latency | --part process | --part process-c1 …]

Prints one JSON line per (round, system, figure) and a table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import procrastinate
import structlog
from pgqueuer.db import AsyncpgDriver
from pgqueuer.domain.types import QueueExecutionMode
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from sqlalchemy import text

from keel import migrations
from keel.audit import build_auditor
from keel.clock import SYSTEM_CLOCK
from keel.db.engine import Database
from keel.jobs import Enqueuer, enqueue, queries, queue
from keel.jobs.registry import JobContext, JobResources, JobType, Registry
from keel.jobs.worker import Worker, WorkerConfig
from keel.resilience.wiring import build_webhooks
from keel.settings import Settings
from keel.storage import LocalDirectoryStore

PG = "postgres@127.0.0.1:5432"
LATENCY_JOBS = 200
WARMUP_JOBS = 10


async def admin(sql: str) -> None:
    connection = await asyncpg.connect(f"postgresql://{PG}/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def fresh(name: str) -> str:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin(f'CREATE DATABASE "{name}"')
    return name


def concurrencies(parts: set[str]) -> list[int]:
    """The worker concurrencies to measure processing at (``--part process-c1`` …)."""
    return [c for c in (1, 10) if f"process-c{c}" in parts]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Done:
    """Counts handler calls; wakes the waiter at ``target``; keeps start latencies."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event = asyncio.Event()
        self.latencies: list[float] = []

    def reset(self, target: int) -> None:
        self.count, self.target = 0, target
        self.latencies = []
        self.event = asyncio.Event()

    def hit(self, enqueued_at: float | None = None) -> None:
        if enqueued_at is not None:
            self.latencies.append(time.time() - enqueued_at)
        self.count += 1
        if self.count >= self.target:
            self.event.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.event.wait(), 600)


async def latency_run(
    done: Done, enqueue_one: Callable[[dict[str, Any]], Awaitable[None]]
) -> tuple[float, float]:
    # Warm-up jobs, not counted, for every system alike: the first few samples of a run
    # otherwise measure connection set-up and statement preparation (a fresh pool
    # connection, the worker's first claim), 20-50 ms each, and decide the p99 of 200.
    done.reset(WARMUP_JOBS)
    await asyncio.sleep(0.5)  # the worker is up and idle
    for _ in range(WARMUP_JOBS):
        await enqueue_one({"t": time.time()})
        await asyncio.sleep(0.005)
    await done.wait()
    done.reset(LATENCY_JOBS)
    await asyncio.sleep(0.1)
    for _ in range(LATENCY_JOBS):
        await enqueue_one({"t": time.time()})
        await asyncio.sleep(0.005)
    await done.wait()
    return percentile(done.latencies, 0.5) * 1000, percentile(done.latencies, 0.99) * 1000


# --- Keel ---------------------------------------------------------------------


async def bench_keel(db_name: str, jobs: int, parts: set[str]) -> dict[str, float]:

    url = f"postgresql+asyncpg://{PG}/{db_name}"
    database = Database(url)
    await migrations.upgrade(database)
    done = Done()

    async def noop(context: JobContext) -> None:
        done.hit(context.payload.get("t"))

    noop_type = JobType("bench.noop", noop, queue="bench")
    registry = Registry([noop_type])
    results: dict[str, float] = {}

    if "enqueue" in parts:
        # Like-for-like with PgQueuer's ``Queries`` on the connection it holds: one
        # connection held for the run, each job committed on its own.
        start = time.perf_counter()
        async with Enqueuer(database) as enqueuer:
            for _ in range(1000):
                await enqueuer.enqueue(noop_type, {})
        results["enqueue_one_per_s"] = 1000 / (time.perf_counter() - start)

        start = time.perf_counter()
        for _ in range(1000):
            await enqueue(database, noop_type, {})
        results["enqueue_one_checkout_each_per_s"] = 1000 / (time.perf_counter() - start)

        start = time.perf_counter()
        for _ in range(1000):
            async with database.write() as session:
                await queue.enqueue(session, noop_type, {})
        results["enqueue_one_own_transaction_per_s"] = 1000 / (time.perf_counter() - start)

        # Keel only: what one job adds to a transaction the caller has open anyway
        # (the API's case) — the enqueue call alone, after the caller's own statement.
        spent = 0.0
        for _ in range(1000):
            async with database.write() as session:
                await session.execute(text("SELECT 1"))
                start = time.perf_counter()
                await queue.enqueue(session, noop_type, {})
                spent += time.perf_counter() - start
        results["enqueue_in_open_transaction_per_s"] = 1000 / spent

        start = time.perf_counter()
        for _ in range(10):
            async with database.write() as session:
                await queue.Enqueuer(session).enqueue_many([queue.NewJob(noop_type)] * 1000)
        results["enqueue_batch_per_s"] = 10_000 / (time.perf_counter() - start)
        async with database.write() as session:
            await session.execute(queries.jobs.delete())

    async def run_worker(concurrency: int) -> tuple[Worker, asyncio.Task[None]]:
        settings = Settings(database_url=url)
        resources = JobResources(
            database=database,
            settings=settings,
            clock=SYSTEM_CLOCK,
            store=LocalDirectoryStore(Path("/tmp/keel-bench-blobs")),  # unused by noop
            http=httpx.AsyncClient(),
            webhooks=build_webhooks(settings),  # unused by noop
            audit=build_auditor(settings, database),  # unused by noop
        )
        worker = Worker(
            resources,
            registry,
            WorkerConfig(queues={"bench": concurrency}, run_periodic=False, metrics_seconds=3600),
        )
        return worker, asyncio.create_task(worker.run())

    for concurrency in concurrencies(parts):
        async with database.write() as session:
            for _ in range(jobs // 1000):
                await queue.Enqueuer(session).enqueue_many([queue.NewJob(noop_type)] * 1000)
        done.reset(jobs)
        start = time.perf_counter()
        worker, task = await run_worker(concurrency)
        await done.wait()
        results[f"process_c{concurrency}_per_s"] = jobs / (time.perf_counter() - start)
        worker.stop()
        await task
        await worker.resources.http.aclose()

    if "latency" in parts:
        worker, task = await run_worker(10)

        enqueuer = Enqueuer(database)

        async def enqueue_one(payload: dict[str, Any]) -> None:
            await enqueuer.enqueue(noop_type, payload)

        async def enqueue_one_checkout_each(payload: dict[str, Any]) -> None:
            await enqueue(database, noop_type, payload)

        async def enqueue_one_in_transaction(payload: dict[str, Any]) -> None:
            async with database.write() as session:
                await queue.enqueue(session, noop_type, payload)

        async with enqueuer:
            results["latency_p50_ms"], results["latency_p99_ms"] = await latency_run(
                done, enqueue_one
            )
        (
            results["latency_checkout_each_p50_ms"],
            results["latency_checkout_each_p99_ms"],
        ) = await latency_run(done, enqueue_one_checkout_each)
        (
            results["latency_own_transaction_p50_ms"],
            results["latency_own_transaction_p99_ms"],
        ) = await latency_run(done, enqueue_one_in_transaction)
        worker.stop()
        await task
        await worker.resources.http.aclose()
    await database.dispose()
    return results


# --- Procrastinate --------------------------------------------------------------


async def bench_procrastinate(db_name: str, jobs: int, parts: set[str]) -> dict[str, float]:

    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=f"postgresql://{PG}/{db_name}")
    )
    done = Done()

    @app.task(name="noop", queue="bench")
    async def noop(t: float | None = None) -> None:
        done.hit(t)

    results: dict[str, float] = {}
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        if "enqueue" in parts:
            start = time.perf_counter()
            for _ in range(1000):
                await noop.defer_async()
            results["enqueue_one_per_s"] = 1000 / (time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(10):
                await noop.batch_defer_async(*[{} for _ in range(1000)])
            results["enqueue_batch_per_s"] = 10_000 / (time.perf_counter() - start)
            await app.connector.execute_query_async("DELETE FROM procrastinate_jobs")

        for concurrency in concurrencies(parts):
            for _ in range(jobs // 1000):
                await noop.batch_defer_async(*[{} for _ in range(1000)])
            done.reset(jobs)
            start = time.perf_counter()
            await app.run_worker_async(
                queues=["bench"],
                concurrency=concurrency,
                wait=False,
                install_signal_handlers=False,
            )
            await done.wait()
            results[f"process_c{concurrency}_per_s"] = jobs / (time.perf_counter() - start)

        if "latency" in parts:
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=["bench"], concurrency=10, install_signal_handlers=False
                )
            )

            async def enqueue_one(payload: dict[str, Any]) -> None:
                await noop.defer_async(**payload)

            results["latency_p50_ms"], results["latency_p99_ms"] = await latency_run(
                done, enqueue_one
            )
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    return results


# --- PgQueuer -------------------------------------------------------------------


async def bench_pgqueuer(db_name: str, jobs: int, parts: set[str]) -> dict[str, float]:

    dsn = f"postgresql://{PG}/{db_name}"
    connection = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    done = Done()
    results: dict[str, float] = {}

    if "enqueue" in parts:
        start = time.perf_counter()
        for _ in range(1000):
            await queries.enqueue("noop", None)
        results["enqueue_one_per_s"] = 1000 / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(10):
            await queries.enqueue(["noop"] * 1000, [None] * 1000, [0] * 1000)
        results["enqueue_batch_per_s"] = 10_000 / (time.perf_counter() - start)
        await queries.clear_queue()

    def manager(concurrency: int, worker_connection: asyncpg.Connection) -> QueueManager:
        qm = QueueManager(Queries(AsyncpgDriver(worker_connection)))

        @qm.entrypoint("noop", concurrency_limit=concurrency)
        async def noop(job: Job) -> None:
            done.hit(json.loads(job.payload)["t"] if job.payload else None)

        return qm

    for concurrency in concurrencies(parts):
        for _ in range(jobs // 1000):
            await queries.enqueue(["noop"] * 1000, [None] * 1000, [0] * 1000)
        done.reset(jobs)
        worker_connection = await asyncpg.connect(dsn)
        start = time.perf_counter()
        qm = manager(concurrency, worker_connection)
        await qm.run(
            mode=QueueExecutionMode.drain,
            batch_size=concurrency,
            dequeue_timeout=timedelta(seconds=0.2),
        )
        await done.wait()
        results[f"process_c{concurrency}_per_s"] = jobs / (time.perf_counter() - start)
        await worker_connection.close()

    if "latency" in parts:
        worker_connection = await asyncpg.connect(dsn)
        qm = manager(10, worker_connection)
        worker = asyncio.create_task(qm.run(batch_size=10))

        async def enqueue_one(payload: dict[str, Any]) -> None:
            await queries.enqueue("noop", json.dumps(payload).encode())

        results["latency_p50_ms"], results["latency_p99_ms"] = await latency_run(done, enqueue_one)
        qm.shutdown.set()
        await asyncio.wait_for(worker, 30)
        await worker_connection.close()
    await connection.close()
    return results


SYSTEMS: dict[str, Callable[[str, int, set[str]], Awaitable[dict[str, float]]]] = {
    "keel": bench_keel,
    "procrastinate": bench_procrastinate,
    "pgqueuer": bench_pgqueuer,
}
PARTS = ("enqueue", "process", "process-c1", "process-c10", "latency")
FIGURES = [
    "enqueue_one_per_s",
    "enqueue_one_checkout_each_per_s",
    "enqueue_one_own_transaction_per_s",
    "enqueue_in_open_transaction_per_s",
    "enqueue_batch_per_s",
    "process_c1_per_s",
    "process_c10_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_checkout_each_p50_ms",
    "latency_checkout_each_p99_ms",
    "latency_own_transaction_p50_ms",
    "latency_own_transaction_p99_ms",
]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--only", action="append", choices=sorted(SYSTEMS))
    parser.add_argument(
        "--part",
        action="append",
        choices=PARTS,
        help="measure only these parts (default: all); keeps one invocation short",
    )
    args = parser.parse_args()
    parts = set(args.part or PARTS)
    if "process" in parts:
        parts |= {"process-c1", "process-c10"}
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    chosen = args.only or list(SYSTEMS)
    collected: dict[str, dict[str, list[float]]] = {s: {f: [] for f in FIGURES} for s in chosen}
    for round_number in range(args.rounds):
        for system in chosen:  # interleaved, so drift on the machine hits every system alike
            name = await fresh(f"keel_bench_{os.getpid()}_{system}")
            try:
                figures = await SYSTEMS[system](name, args.jobs, parts)
            finally:
                await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for figure, value in figures.items():
                collected[system][figure].append(value)
            print(json.dumps({"round": round_number, "system": system, **figures}), flush=True)
    print(f"\nmedians over {args.rounds} rounds, {args.jobs} jobs to process")
    print(f"{'figure':<34}" + "".join(f"{s:>16}" for s in chosen))
    for figure in (f for f in FIGURES if any(collected[s][f] for s in chosen)):
        row = "".join(
            f"{statistics.median(collected[s][figure]):>16.1f}"
            if collected[s][figure]
            else f"{'-':>16}"
            for s in chosen
        )
        print(f"{figure:<34}{row}")


if __name__ == "__main__":
    asyncio.run(main())

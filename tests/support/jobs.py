"""Workers and job types for the job queue's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from keel.audit import build_auditor
from keel.db.engine import Database
from keel.jobs.catalog import JOB_TYPES, PERIODIC
from keel.jobs.connector import JobConnector
from keel.jobs.metrics import JobMetrics
from keel.jobs.registry import JobContext, JobResources, JobType, Periodic, Registry
from keel.jobs.retry import RetryPolicy
from keel.jobs.worker import Worker, WorkerConfig
from keel.resilience import BreakerRegistry, DependencyPool, ResilienceMetrics
from keel.resilience.wiring import build_webhooks
from keel.settings import Settings
from keel.storage import LocalDirectoryStore
from keel.testing import ManualClock
from tests.support.app import make_settings


class Recorder:
    """Job types whose handlers record their calls (and fail on demand)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, dict[str, Any]]] = []
        self.fail_times: dict[str, int] = {}
        self.record = JobType("test.record", self.handle, retry=RetryPolicy(3, 10.0, 60.0))
        self.urgent = JobType("test.urgent", self.handle, queue="critical")

    async def handle(self, context: JobContext) -> None:
        self.calls.append((context.job_id, context.attempt, context.payload))
        remaining = self.fail_times.get(context.job_id, 0)
        if remaining:
            self.fail_times[context.job_id] = remaining - 1
            raise RuntimeError("planned failure")

    def job_types(self) -> list[JobType]:
        return [self.record, self.urgent]


def make_registry(recorder: Recorder, periodic: list[Periodic] | None = None) -> Registry:
    return Registry([*JOB_TYPES, *recorder.job_types()], [*PERIODIC, *(periodic or [])])


@asynccontextmanager
async def worker_for(
    database: Database,
    registry: Registry,
    clock: ManualClock,
    tmp_path: Path,
    *,
    queues: dict[str, int] | None = None,
    http: httpx.AsyncClient | None = None,
    settings: Settings | None = None,
    webhooks: DependencyPool | None = None,
    connector: JobConnector | None = None,
    metrics: JobMetrics | None = None,
    **config: Any,
) -> AsyncIterator[Worker]:
    """``metrics``: where the worker counts (by default registered nowhere)."""
    settings = settings or make_settings(database.url, str(tmp_path / "blobs"))
    client = http or httpx.AsyncClient()
    if webhooks is None:
        webhooks = build_webhooks(
            settings,
            clock=clock,
            registry=BreakerRegistry(clock=clock),
            metrics=ResilienceMetrics(),
        )
    try:
        resources = JobResources(
            database=database,
            settings=settings,
            clock=clock,
            store=LocalDirectoryStore(settings.storage_dir),
            http=client,
            webhooks=webhooks,
            audit=build_auditor(settings, database, clock=clock),
        )
        worker = Worker(
            resources,
            registry,
            WorkerConfig(queues=queues or {"default": 4, "critical": 2, "exports": 2}, **config),
            connector=connector,
            metrics=metrics,
        )
        try:
            yield worker
        finally:
            await worker.close()
    finally:
        await client.aclose()

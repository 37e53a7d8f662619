"""The worker: claims due jobs, runs their handlers under a lease, records the outcome.

One claim loop per named queue, each with its own concurrency — the queues are
the bulkheads, so a flood of exports never starves ``critical``. Beside them:
heartbeats renew the leases of running jobs; a reclaimer hands expired leases
(their worker died) back to ``ready``; a ticker enqueues periodic jobs; a sampler
feeds the depth gauges; on PostgreSQL a listener turns ``NOTIFY`` into wake-ups.

The worker reaches the queue only through its store (:class:`~keel.jobs.connector.JobConnector`,
by default the SQL one of its database): every claim, heartbeat, outcome and
release is one step of that seam. Every outcome write is fenced on (job id, this
worker, this attempt): a worker that lost its lease can no longer change the job.
Graceful stop: stop claiming, let running jobs finish within the grace period,
release the rest to ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from keel.errors import DatabaseUnavailable
from keel.jobs import schedule
from keel.jobs.connector import ClaimedJob, JobConnector, ReclaimedJob
from keel.jobs.dead_letter import DeadLetters, lease_expired
from keel.jobs.errors import JobDeferred, PermanentJobError
from keel.jobs.listener import Listener
from keel.jobs.metrics import JobMetrics
from keel.jobs.registry import (
    DeadLetter,
    JobContext,
    JobResources,
    Registry,
    UnknownJobType,
)
from keel.jobs.retry import Outcome, RetryPolicy, after_failure, deferral
from keel.jobs.sql import PostgresJobConnector, sql_connector
from keel.jobs.states import JobState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("keel.jobs")

MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class WorkerConfig:
    queues: dict[str, int]
    """Queue name → how many of its jobs may run at once."""
    lease_seconds: float = 30.0
    poll_seconds: float = 0.2
    listen_poll_seconds: float = 1.0
    grace_seconds: float = 20.0
    schedule_tick_seconds: float = 10.0
    metrics_seconds: float = 15.0
    run_periodic: bool = True
    success_flush_seconds: float = 0.05
    """How long a finished attempt's success may wait to ride on the next claim
    before it is written on its own (LISTEN up, queue drained)."""

    def __post_init__(self) -> None:
        if not self.queues or any(n < 1 for n in self.queues.values()):
            raise ValueError("a worker needs at least one queue, each with concurrency ≥ 1")
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if not 0 <= self.success_flush_seconds < self.lease_seconds:
            raise ValueError("success_flush_seconds must be at least 0 and below lease_seconds")


def parse_queues(spec: str, default_concurrency: int) -> dict[str, int]:
    """``"critical=4,default,exports=2"`` → ``{"critical": 4, "default": N, "exports": 2}``."""
    queues: dict[str, int] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, count = item.partition("=")
        queues[name.strip()] = int(count) if count else default_concurrency
    return queues


def _retry_after(error: BaseException) -> float | None:
    """The seconds a failure asks to wait (a ``Retry-After`` it carries), if any."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


class Worker:
    def __init__(
        self,
        resources: JobResources,
        registry: Registry,
        config: WorkerConfig,
        *,
        worker_id: str | None = None,
        connector: JobConnector | None = None,
        metrics: JobMetrics | None = None,
    ) -> None:
        """``connector`` is the queue store (its owner closes it); by default the SQL
        store of ``resources.database``, with a small pool of the worker's own.
        ``metrics``: where durations, retries and depth are counted (the composition
        root's registry; by default registered nowhere)."""
        self.resources = resources
        self.registry = registry
        self.metrics = metrics if metrics is not None else JobMetrics()
        self._dead_letters = DeadLetters(registry, self.metrics)
        self.config = config
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stopping = asyncio.Event()
        self._wake = {queue: asyncio.Event() for queue in config.queues}
        self._running: dict[str, tuple[ClaimedJob, asyncio.Task[None]]] = {}
        self._lost: set[str] = set()
        self._keepers_stop = asyncio.Event()
        self._succeeded: list[tuple[str, int]] = []
        self._defer_success = False
        self._backlog: dict[str, bool] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._owns_connector = connector is None
        if connector is None:
            pool_size = min(sum(config.queues.values()) + 2, 20)
            connector = sql_connector(resources.database, pool_size=pool_size)
        self._connector: JobConnector = connector
        self._listener: Listener | None = None
        if isinstance(connector, PostgresJobConnector):
            self._listener = Listener(connector.database.url, self._wake)

    @property
    def running(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        """Release the worker's own connections (:meth:`run` does it when it returns)."""
        if self._owns_connector:
            await self._connector.close()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` then finishes or releases what runs and returns."""
        self._stopping.set()
        for event in self._wake.values():
            event.set()

    # --- single steps: each takes its time from the injected clock --------------

    async def claim(self, queue: str, limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` due jobs; also records the successes deferred until now."""
        now = self.resources.clock.now()
        lease_until = now + timedelta(seconds=self.config.lease_seconds)
        succeeded, self._succeeded = self._succeeded, []
        try:
            return await self._connector.claim(queue, limit, self.id, now, lease_until, succeeded)
        except BaseException:
            self._succeeded[:0] = succeeded  # not recorded: keep them for the next write
            raise

    def _context(self, job: ClaimedJob) -> JobContext:
        return JobContext(
            job_id=job.id,
            job_type=job.job_type,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            payload=job.payload,
            resources=self.resources,
        )

    async def execute(self, job: ClaimedJob) -> JobState | None:
        """Run one claimed attempt and record its outcome; ``None`` if the lease was lost."""
        clock = self.resources.clock
        try:
            job_type = self.registry.get(job.job_type)
            policy, timeout, handler = job_type.retry, job_type.timeout_seconds, job_type.handler
        except UnknownJobType as error:
            return await self._failed(job, RetryPolicy(), error, 0.0)
        context = self._context(job)
        started = clock.monotonic()
        with tracer.start_as_current_span(
            f"job {job.job_type}",
            context=propagate.extract(job.trace_context),
            kind=SpanKind.CONSUMER,
            attributes={
                "keel.job.id": job.id,
                "keel.job.type": job.job_type,
                "keel.job.queue": job.queue,
                "keel.job.attempt": job.attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await asyncio.wait_for(handler(context), timeout=timeout)
            except JobDeferred as deferred:  # not tried at all: no attempt spent
                span.set_attribute("keel.job.deferred", True)
                return await self._deferred(job, deferred, clock.monotonic() - started)
            except Exception as error:  # any handler failure is the job's failure
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                return await self._failed(job, policy, error, clock.monotonic() - started)
        elapsed = clock.monotonic() - started
        self.metrics.job_duration.labels(job.job_type, "succeeded").observe(elapsed)
        if self._defer_success:
            # Recorded by the queue loop's next claim (see CLAIM_POSTGRESQL), at once.
            self._succeeded.append((job.id, job.attempt))
            return JobState.SUCCEEDED
        succeeded = [(job.id, job.attempt)]
        recorded = await self._record(lambda: self._succeed_one(succeeded, clock.now()), job)
        if not recorded:
            return None
        log.info("job_succeeded", job_id=job.id, job_type=job.job_type, attempt=job.attempt)
        return JobState.SUCCEEDED

    async def _deferred(
        self, job: ClaimedJob, deferred: JobDeferred, elapsed: float
    ) -> JobState | None:
        run_at = deferral(deferred.retry_after, now=self.resources.clock.now())
        recorded = await self._record(
            lambda: self._connector.defer(
                job.leased_to(self.id), run_at=run_at, reason=_error_text(deferred)
            ),
            job,
        )
        self.metrics.job_duration.labels(job.job_type, "deferred").observe(elapsed)
        if not recorded:
            return None
        self.metrics.jobs_deferred.labels(job.job_type).inc()
        log.info(
            "job_deferred",
            job_id=job.id,
            job_type=job.job_type,
            attempt=job.attempt - 1,
            run_at=run_at.isoformat(),
            reason=deferred.detail,
        )
        return JobState.RETRYING

    async def _failed(
        self, job: ClaimedJob, policy: RetryPolicy, error: BaseException, elapsed: float
    ) -> JobState | None:
        now = self.resources.clock.now()
        if isinstance(error, PermanentJobError):
            outcome = Outcome(JobState.DEAD, None)
        else:
            outcome = after_failure(
                policy,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                now=now,
                not_before=_retry_after(error),
            )
        letter: DeadLetter | None = None
        if outcome.state is JobState.DEAD:
            letter = DeadLetter(self._context(job), type(error).__name__, _error_text(error))
        recorded = await self._record(
            lambda: self._connector.fail(
                job.leased_to(self.id),
                state=outcome.state,
                run_at=outcome.run_at,
                error=_error_text(error),
                now=now,
                on_dead=self._dead_letters.hook_for(letter),
            ),
            job,
        )
        self.metrics.job_duration.labels(job.job_type, outcome.state.value).observe(elapsed)
        if not recorded:
            return None
        if letter is not None:
            log.error(
                "job_dead",
                job_id=job.id,
                job_type=job.job_type,
                attempt=job.attempt,
                error=_error_text(error),
            )
            await self._dead_letters.dead_lettered(letter)
        else:
            self.metrics.job_retries.labels(job.job_type).inc()
            log.warning(
                "job_retrying",
                job_id=job.id,
                job_type=job.job_type,
                attempt=job.attempt,
                run_at=outcome.run_at.isoformat() if outcome.run_at else None,
                error=_error_text(error),
            )
        return outcome.state

    async def _succeed_one(self, succeeded: list[tuple[str, int]], now: datetime) -> bool:
        return await self._connector.succeed(succeeded, self.id, now) == 1

    async def _record(self, write: Callable[[], Awaitable[bool]], job: ClaimedJob) -> bool:
        """Write an outcome through the store, retrying a store that does not answer;
        ``False`` when the fence says the lease is gone."""
        for attempt in range(3):
            try:
                recorded = await write()
                break
            except DatabaseUnavailable:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))
        if not recorded:
            log.warning("job_outcome_discarded", job_id=job.id, reason="lease lost")
        return recorded

    async def heartbeat(self) -> set[str]:
        """Renew the leases of running jobs; returns (and stops) those whose lease was lost."""
        ids = list(self._running)
        if not ids:
            return set()
        until = self.resources.clock.now() + timedelta(seconds=self.config.lease_seconds)
        kept = await self._connector.renew(ids, self.id, until)
        lost = {job_id for job_id in ids if job_id not in kept and job_id in self._running}
        for job_id in lost:
            self._lost.add(job_id)
            self._running[job_id][1].cancel()
            log.warning("job_lease_lost", job_id=job_id)
        return lost

    async def reclaim(self) -> int:
        """Hand jobs whose lease expired back to ``ready`` (or ``dead``); any worker may."""
        # A job dead from its last lease and its type's ``on_dead`` (an export
        # marked failed) commit together.
        dead: dict[str, DeadLetter] = {}

        async def on_dead(session: AsyncSession, jobs: Sequence[ReclaimedJob]) -> None:
            for job in jobs:
                dead[job.id] = lease_expired(job, self.resources)
                await self._dead_letters.run_hook(session, dead[job.id])

        rows = await self._connector.reclaim(self.resources.clock.now(), on_dead)
        for row in rows:
            if row.state == JobState.DEAD.value and row.id not in dead:
                dead[row.id] = lease_expired(row, self.resources)
        for row in rows:
            self.metrics.leases_reclaimed.inc()
            if row.id in dead:
                await self._dead_letters.dead_lettered(dead[row.id])
            log.warning("job_lease_expired", job_id=row.id, job_type=row.job_type, state=row.state)
        return len(rows)

    async def tick(self) -> list[str]:
        return await schedule.tick(
            self._connector,
            self.registry,
            self.registry.periodic,
            self.resources.clock.now(),
        )

    async def sample(self) -> None:
        self.metrics.record_stats(await self._connector.stats(self.resources.clock.now()))

    async def run_until_idle(self, queue: str, *, limit: int = 1000) -> int:
        """Claim and run due jobs of ``queue`` one batch at a time until none is due.

        For tests and one-shot runs: no loops, no sleeping, time from the clock.
        """
        done = 0
        while done < limit:
            claimed = await self.claim(queue, min(self.config.queues.get(queue, 1), limit - done))
            if not claimed:
                return done
            await asyncio.gather(*(self.execute(job) for job in claimed))
            done += len(claimed)
        return done

    # --- the long-running worker ----------------------------------------------------

    async def run(self) -> None:
        """Work until :meth:`stop`; then stop claiming, finish or release, and return."""
        log.info("worker_started", worker=self.id, queues=self.config.queues)
        try:  # one connection per queue loop and one for outcome writes, opened up front
            await self._connector.warm(len(self.config.queues) + 1)
        except Exception as error:  # never fatal: the loops open them on demand, as before
            log.warning("job_store_warm_failed", worker=self.id, error=type(error).__name__)
        self._defer_success = True
        loops = [
            asyncio.create_task(self._queue_loop(queue, n), name=f"claim:{queue}")
            for queue, n in self.config.queues.items()
        ]
        keepers = [
            self._every(self.config.lease_seconds / 3, self.heartbeat, "heartbeat"),
            self._every(max(self.config.lease_seconds / 2, 0.5), self.reclaim, "reclaim"),
            self._every(self.config.metrics_seconds, self.sample, "sample"),
        ]
        if self.config.run_periodic and self.registry.periodic:
            keepers.append(self._every(self.config.schedule_tick_seconds, self.tick, "tick"))
        listener_stop = asyncio.Event()
        if self._listener is not None:
            keepers.append(self._listener.run(listener_stop))
        keeper_tasks = [asyncio.create_task(coroutine) for coroutine in keepers]
        try:
            await self._stopping.wait()
        finally:
            self.stop()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._finish_running()
            if self._flusher is not None:
                await asyncio.gather(self._flusher, return_exceptions=True)
            self._defer_success = False
            await self._flush_succeeded()
            listener_stop.set()
            self._keepers_stop.set()
            await asyncio.wait(keeper_tasks, timeout=5)
            for task in keeper_tasks:
                task.cancel()
            await self.close()
            log.info("worker_stopped", worker=self.id)

    async def _flush_succeeded(self) -> None:
        succeeded, self._succeeded = self._succeeded, []
        if not succeeded:
            return
        now = self.resources.clock.now()
        try:
            await self._connector.succeed(succeeded, self.id, now)
        except Exception:
            if self._defer_success:  # still running: the next claim records them
                self._succeeded[:0] = succeeded
                log.warning("job_outcomes_deferred", worker=self.id, count=len(succeeded))
            else:
                log.exception("job_outcomes_not_recorded", worker=self.id, count=len(succeeded))

    async def _finish_running(self) -> None:
        tasks = [task for _job, task in self._running.values()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.config.grace_seconds)
        if not pending:
            return
        left = [job.id for job, task in list(self._running.values()) if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5)
        try:
            await self._connector.release(left, self.id)
            log.warning("jobs_released", worker=self.id, count=len(left))
        except DatabaseUnavailable:
            log.error("jobs_release_failed", worker=self.id, count=len(left))

    async def _queue_loop(self, queue: str, concurrency: int) -> None:
        wake = self._wake[queue]
        while not self._stopping.is_set():
            free = concurrency - sum(1 for job, _t in self._running.values() if job.queue == queue)
            if free > 0:
                wake.clear()
                try:
                    claimed = await self.claim(queue, free)
                    # A full batch: more may be due, so the next job to finish claims again.
                    self._backlog[queue] = len(claimed) == free
                except DatabaseUnavailable:
                    log.warning("job_claim_failed", queue=queue)
                    claimed, self._backlog[queue] = [], True
                except Exception:  # the loop must outlive one bad round, or the queue starves
                    log.exception("job_claim_crashed", queue=queue)
                    claimed, self._backlog[queue] = [], True
                for job in claimed:
                    self._start(job)
                if claimed and len(claimed) == free:
                    continue
            else:
                # Full: a wake-up arriving now is kept as a backlog, claimed when a job finishes.
                wake.clear()
                self._backlog[queue] = True
            await self._wait(wake, self._poll_seconds())

    def _poll_seconds(self) -> float:
        if self._listener is not None and self._listener.connected:
            return self.config.listen_poll_seconds
        return self.config.poll_seconds

    def _start(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(self._guarded(job), name=f"job:{job.id}")
        self._running[job.id] = (job, task)

    async def _guarded(self, job: ClaimedJob) -> None:
        try:
            await self.execute(job)
        except asyncio.CancelledError:
            if job.id not in self._lost and not self._stopping.is_set():
                raise
        except Exception:
            log.exception("job_outcome_not_recorded", job_id=job.id, job_type=job.job_type)
        finally:
            self._running.pop(job.id, None)
            self._lost.discard(job.id)
            self._finished(job.queue)

    def _finished(self, queue: str) -> None:
        """A slot came free: claim again if work may be waiting, else just record the success.

        While LISTEN is up and the last claim left the queue empty, every new job
        arrives with a NOTIFY, so a claim now would find nothing — and would sit in
        front of the claim that a NOTIFY arriving meanwhile asks for (one round trip
        of latency). The finished attempts then ride on the claim of the next
        NOTIFY if one comes within ``success_flush_seconds``, and are otherwise
        recorded on their own, concurrently (:meth:`_flush_succeeded_soon`).
        """
        listening = self._listener is not None and self._listener.connected
        if self._backlog.get(queue, True) or not listening or not self._defer_success:
            self._wake[queue].set()
        elif self._succeeded and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(
                self._flush_succeeded_soon(), name="flush-succeeded"
            )

    async def _flush_succeeded_soon(self) -> None:
        """Write the finished attempts ``success_flush_seconds`` from now, unless a claim
        carries them first.

        Written at once, each success is one more commit — one more WAL flush —
        and it lands between a NOTIFY and its claim, which then wait for the disk
        behind it. A job enqueued within the moment is claimed by a statement that
        records the success too (``CLAIM_POSTGRESQL``): one commit instead of two.
        """
        await self._wait(self._stopping, self.config.success_flush_seconds)
        await self._flush_succeeded()

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        # ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` wraps the
        # wait in a task of its own, one more loop turn between a NOTIFY and the claim.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    async def _every(
        self, interval: float, action: Callable[[], Awaitable[object]], name: str
    ) -> None:
        while not self._keepers_stop.is_set():
            try:
                await action()
            except Exception:  # a keeper must outlive one bad round
                log.exception("worker_keeper_failed", keeper=name)
            await self._wait(self._keepers_stop, interval)

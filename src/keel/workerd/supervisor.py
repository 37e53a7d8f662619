"""``keel worker --autoscale MIN..MAX``: a supervisor that runs MIN to MAX worker processes.

Every ``KEEL_WORKER_AUTOSCALE_INTERVAL_SECONDS`` it reads the served queues'
backlog from the database (jobs in hand and the oldest ready job's age) and
asks the :class:`~keel.workerd.scaling.Autoscaler` how many processes to run.
Each scale event is logged (``worker_scaled``) and counted
(``keel_worker_scale_events_total{direction}``); the count runs is a gauge
(``keel_worker_processes``). A child that exits without being told to is
started again (``worker_process_restarted``, ``keel_worker_process_restarts_total``),
at most once per interval for each missing process.

Scaling down sends SIGTERM to the newest child, which drains as any worker
does: it stops claiming, finishes its running jobs within
``KEEL_JOBS_GRACE_SECONDS`` and releases the rest. SIGTERM (or SIGINT) to the
supervisor drains every child the same way, and SIGKILLs one still running
``KILL_GRACE_SECONDS`` past its grace. The children are ``keel worker`` processes
without a port of their own; the supervisor's port answers for all of them, and
its ``/metrics`` sums their samples (a prometheus_client multiprocess directory
the supervisor prepares and removes).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import SQLAlchemyError

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.errors import KeelError
from keel.jobs.queue import stats
from keel.jobs.states import JobState
from keel.observe import checks
from keel.observe.health import HealthCheck, Observation, Status
from keel.observe.lifecycle import Lifecycle
from keel.observe.metrics_directory import metrics_directory
from keel.observe.watchdog import LoopWatchdog
from keel.settings import Settings
from keel.workerd.checks import job_store_check
from keel.workerd.http import Probes
from keel.workerd.metrics import SupervisorMetrics, WorkerExposition, forget_process, queue_depth
from keel.workerd.scaling import Autoscaler, Backlog, ScaleEvent, ScalePolicy
from keel.workerd.service import HttpPort, health_registry, serving

log = structlog.get_logger(__name__)

KILL_GRACE_SECONDS = 10.0
IN_HAND = (JobState.READY, JobState.RUNNING)


def scale_policy(settings: Settings, minimum: int, maximum: int) -> ScalePolicy:
    return ScalePolicy(
        minimum=minimum,
        maximum=maximum,
        jobs_per_process=settings.worker_autoscale_jobs_per_process,
        max_age_seconds=settings.worker_autoscale_max_age_seconds,
        up_cooldown_seconds=settings.worker_autoscale_up_cooldown_seconds,
        down_cooldown_seconds=settings.worker_autoscale_down_cooldown_seconds,
        down_window_seconds=settings.worker_autoscale_down_window_seconds,
    )


def child_command(queues: dict[str, int]) -> list[str]:
    """A ``keel worker`` serving ``queues``, without a port (the supervisor's answers)."""
    spec = ",".join(f"{name}={count}" for name, count in queues.items())
    return [
        *(sys.executable, "-m", "keel.cli", "worker", "--queues", spec),
        *("--http-port", "0", "--supervised"),
    ]


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    stopping_since: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


class WorkerSupervisor:
    def __init__(
        self,
        settings: Settings,
        policy: ScalePolicy,
        queues: dict[str, int],
        port: HttpPort,
        *,
        clock: Clock = SYSTEM_CLOCK,
        command: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.port = port
        self.autoscaler = Autoscaler(policy)
        self.metrics = SupervisorMetrics()
        self._clock = clock
        self._command = list(command or child_command(queues))
        self._active: list[Child] = []
        self._stopping: list[Child] = []
        self._stop = asyncio.Event()
        self._stop_seconds = settings.jobs_grace_seconds + KILL_GRACE_SECONDS
        self._directory: str | None = None

    @property
    def processes(self) -> int:
        return len(self._active)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Supervise until SIGTERM/SIGINT (or :meth:`stop`), then drain every child."""
        database = Database(
            self.settings.database_url, pool_size=2, timeout=self.settings.database_timeout_seconds
        )
        lifecycle = Lifecycle(self._clock)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        try:
            with metrics_directory(2) as directory:  # the children inherit its variable
                self._directory = str(directory) if directory is not None else None
                probes = self._probes(database, lifecycle)
                async with serving(self.port, probes, lifecycle):
                    log.info(
                        "worker_supervisor_started",
                        minimum=self.autoscaler.policy.minimum,
                        maximum=self.autoscaler.policy.maximum,
                        queues=self.queues,
                    )
                    await self._supervise(database)
                    lifecycle.begin_draining()
                    await self._drain_all()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await database.dispose()
            log.info("worker_supervisor_stopped")

    def _probes(self, database: Database, lifecycle: Lifecycle) -> Probes:
        settings = self.settings
        health = health_registry(settings, self._clock)
        health.register(checks.database_check(database))
        health.register(job_store_check(database, self.queues))
        health.register(self._processes_check())
        depth = queue_depth(
            database, self.queues, self._clock, settings.health_check_timeout_seconds
        )
        exposition = WorkerExposition(depth, own=[self.metrics.registry], directory=self._directory)
        return Probes(
            health=health,
            lifecycle=lifecycle,
            watchdog=LoopWatchdog(),
            metrics=exposition.render,
            release_id=settings.release_id,
            service_id=settings.service_id,
            description="worker supervisor",
            live_lag_warn_seconds=settings.live_loop_lag_warn_seconds,
        )

    def _processes_check(self) -> HealthCheck:
        async def probe() -> Observation:
            alive = sum(1 for child in self._active if child.process.poll() is None)
            if alive == 0:
                return Observation(
                    value=0, status=Status.FAIL, output="no worker process is running"
                )
            return Observation(value=alive)

        return HealthCheck("processes", "component", "count", probe)

    async def _supervise(self, database: Database) -> None:
        interval = self.settings.worker_autoscale_interval_seconds
        while not self._stop.is_set():
            await self.tick(database)
            try:
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            except TimeoutError:
                pass

    async def tick(self, database: Database) -> ScaleEvent | None:
        """One round: reap exited children, read the backlog, scale, start what is missing."""
        now = self._clock.monotonic()
        self._reap(now)
        backlog = await self.read_backlog(database)
        event: ScaleEvent | None = None
        if backlog is not None:
            self.metrics.wanted.set(self.autoscaler.wanted(backlog))
            event = self.autoscaler.observe(now, backlog)
            if event is not None:
                self.metrics.scale_events.labels(event.direction.value).inc()
                log.info(
                    "worker_scaled",
                    direction=event.direction.value,
                    processes_before=event.before,
                    processes_after=event.after,
                    processes_wanted=event.wanted,
                    jobs_in_hand=event.backlog.in_hand,
                    oldest_ready_age_seconds=round(event.backlog.oldest_ready_age_seconds, 3),
                )
        if self._stop.is_set():  # told to stop meanwhile: start nothing more
            return event
        while len(self._active) < self.autoscaler.count:
            self._spawn()
        while len(self._active) > self.autoscaler.count:
            self._retire(self._active[-1], now)
        self.metrics.processes.set(len(self._active))
        return event

    async def read_backlog(self, database: Database) -> Backlog | None:
        """Jobs in hand and the oldest ready age over the served queues (None: unreadable)."""
        try:
            async with asyncio.timeout(self.settings.health_check_timeout_seconds):
                async with database.read() as session:
                    reading = await stats(session, self._clock.now())
        except (TimeoutError, KeelError, SQLAlchemyError, OSError) as error:
            log.warning("worker_backlog_unavailable", error=type(error).__name__)
            return None
        served = [item for item in reading if item.queue in self.queues]
        return Backlog(
            in_hand=sum(item.depth.get(state, 0) for item in served for state in IN_HAND),
            oldest_ready_age_seconds=max(
                (item.oldest_ready_age_seconds for item in served), default=0.0
            ),
        )

    def _spawn(self) -> None:
        process = subprocess.Popen(self._command)  # noqa: S603 - our own interpreter and module
        self._active.append(Child(process))
        log.info("worker_process_started", pid=process.pid)

    def _retire(self, child: Child, now: float) -> None:
        """Tell ``child`` to drain; it is reaped when it exits (or killed past its grace)."""
        self._active.remove(child)
        child.stopping_since = now
        self._stopping.append(child)
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
        log.info("worker_process_stopping", pid=child.pid)

    def _reap(self, now: float) -> None:
        for child in list(self._active):
            code = child.process.poll()
            if code is None:
                continue
            self._active.remove(child)
            self._forget(child)
            self.metrics.restarts.inc()
            log.warning("worker_process_restarted", pid=child.pid, returncode=code)
        for child in list(self._stopping):
            code = child.process.poll()
            if code is not None:
                self._stopping.remove(child)
                self._forget(child)
                log.info("worker_process_stopped", pid=child.pid, returncode=code)
            elif now - (child.stopping_since or now) > self._stop_seconds:
                child.process.kill()
                log.warning("worker_process_killed", pid=child.pid, after=self._stop_seconds)

    def _forget(self, child: Child) -> None:
        if self._directory is not None:
            forget_process(self._directory, child.pid)

    async def _drain_all(self) -> None:
        now = self._clock.monotonic()
        for child in list(self._active):
            self._retire(child, now)
        self.metrics.processes.set(0)
        log.info("worker_supervisor_draining", processes=len(self._stopping))
        deadline = now + self._stop_seconds + 5.0
        while self._stopping and self._clock.monotonic() < deadline:
            self._reap(self._clock.monotonic())
            await asyncio.sleep(0.1)
        for child in self._stopping:
            child.process.kill()
            child.process.wait(timeout=5)
            log.warning("worker_process_killed", pid=child.pid)
        self._stopping.clear()

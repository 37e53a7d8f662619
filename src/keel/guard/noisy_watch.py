"""Acts on the noisy-neighbour detector: judges every few seconds, records and reports flags.

Flag transitions are written to ``noisy_flags`` (so ``keel limits noisy``, a
separate process, can list them), logged, counted and handed to listeners
(the audit log subscribes). Judging is off the request path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import select, update

from keel.background import BackgroundTask, every
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables_limits import NoisyFlag
from keel.guard.noisy import Flag, NoisyNeighbourDetector

log = structlog.get_logger(__name__)

FlagListener = Callable[[Flag | None, str], Awaitable[None]]


class NoisyMetrics:
    """Flagged organisations and flags raised, on ``registry`` (``None``: registered
    nowhere)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.flagged = Gauge(
            "keel_noisy_orgs",
            "Organisations flagged as noisy neighbours in this process.",
            registry=registry,
        )
        self.flags = Counter(
            "keel_noisy_flags_total",
            "Noisy-neighbour flags raised.",
            ["reason"],
            registry=registry,
        )


class NoisyWatch:
    def __init__(
        self,
        detector: NoisyNeighbourDetector,
        database: Database,
        *,
        interval: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        metrics: NoisyMetrics | None = None,
    ) -> None:
        self.detector = detector
        self._metrics = metrics if metrics is not None else NoisyMetrics()
        self._database = database
        self._interval = interval
        self._clock = clock
        self._watch = BackgroundTask(
            "noisy-watch", lambda: every(self._interval, self.judge, "noisy_watch_failed")
        )
        self.listeners: list[FlagListener] = []

    async def judge(self) -> tuple[list[Flag], list[str]]:
        now = self._clock.now()
        newly, cleared = self.detector.evaluate(self._clock.monotonic())
        self._metrics.flagged.set(len(self.detector.flagged))
        if not newly and not cleared:
            return newly, cleared
        async with self._database.write() as session:
            for flag in newly:
                self._metrics.flags.labels(flag.reason).inc()
                log.warning(
                    "noisy_neighbour_flagged",
                    org_id=flag.org_id,
                    reason=flag.reason,
                    value=round(flag.value, 3),
                    threshold=round(flag.threshold, 3),
                )
                session.add(
                    NoisyFlag(
                        org_id=flag.org_id,
                        reason=flag.reason,
                        value=flag.value,
                        threshold=flag.threshold,
                        flagged_at=now,
                    )
                )
            for org_id in cleared:
                log.info("noisy_neighbour_cleared", org_id=org_id)
                await session.execute(
                    update(NoisyFlag)
                    .where(NoisyFlag.org_id == org_id, NoisyFlag.cleared_at.is_(None))
                    .values(cleared_at=now)
                )
        for flag in newly:
            for listener in self.listeners:
                await listener(flag, flag.org_id)
        for org_id in cleared:
            for listener in self.listeners:
                await listener(None, org_id)
        return newly, cleared

    def start(self) -> None:
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()


async def active_flags(database: Database) -> list[NoisyFlag]:
    async with database.read() as session:
        rows = await session.scalars(
            select(NoisyFlag).where(NoisyFlag.cleared_at.is_(None)).order_by(NoisyFlag.flagged_at)
        )
        return list(rows)

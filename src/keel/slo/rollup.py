"""Per-minute SLO rollups: the SLIs counted in Keel's own database.

Prometheus is optional; the embedded default still has SLOs because every
serving process counts, per SLO and minute, the requests the SLO's selector
chooses and the good ones among them — exactly the events the recording
rules count on the request histogram:

- *availability*: good = not 5xx (``http_response_status_code!~"5.."``);
- *latency*: good = at most the threshold, which is a bucket edge, so a
  request is good exactly when the histogram puts it in the ``le`` bucket.

Requests the selector leaves out (probes, ``/metrics``, non-API paths) and
synthetic checks (never on the histogram at all) are not counted.

:class:`RollupCounter` is the request path's part: a dict increment per SLO,
no I/O, no lock (one event loop per process). :class:`RollupFlusher` moves the
counts to ``slo_rollups`` once a minute, and on shutdown, with one upsert that
*adds* them, so any number of processes share a row. A failed flush puts the
counts back for the next one (bounded: the oldest minutes go first) and is
logged and counted; it never reaches a request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Table, delete
from sqlalchemy.dialects import postgresql, sqlite

from keel.background import BackgroundTask
from keel.db.engine import Database
from keel.db.tables_slo import SLORollup
from keel.slo.spec import STATUS_LABEL, Objective

log = structlog.get_logger(__name__)

rollups: Table = SLORollup.__table__  # type: ignore[assignment]

FLUSH_OUTCOMES = ("success", "failure")


class RollupMetrics:
    """The rollups' own families on ``registry`` (``None``: registered nowhere), every
    outcome's series at zero from the first scrape."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.flushes = Counter(
            "keel_slo_rollup_flushes_total",
            "Flushes of the per-minute SLO rollups to the database, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            "keel_slo_rollup_dropped_minutes_total",
            "Per-SLO minutes of counts dropped because the database refused them for too long.",
            registry=registry,
        )
        for outcome in FLUSH_OUTCOMES:
            self.flushes.labels(outcome)


FLUSH_SECONDS = 60.0
# Counts kept for a database that refuses flushes: three days of one row per SLO and
# minute, a few hundred kilobytes; beyond that the oldest minutes are dropped and counted.
MAX_PENDING_MINUTES = 3 * 24 * 60
# Rollups are kept for the longest SLO period plus this, then pruned.
RETENTION_MARGIN = timedelta(days=1)

Key = tuple[str, int]
"""(SLO name, minute since the epoch)."""


@dataclass(frozen=True, slots=True)
class _Counted:
    """One SLO a request's labels fall under: its name and, for latency, the threshold."""

    name: str
    threshold_seconds: float | None


def minute_of(epoch_seconds: float) -> int:
    return int(epoch_seconds // 60)


def minute_start(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


class RollupCounter:
    """The per-process, per-minute counts of every SLO (the request path's side)."""

    def __init__(
        self, objectives: Sequence[Objective], metrics: RollupMetrics | None = None
    ) -> None:
        self._objectives = tuple(objectives)
        self.metrics = metrics or RollupMetrics()
        self._selected: dict[tuple[str, str, bool], tuple[_Counted, ...]] = {}
        self._counts: dict[Key, list[int]] = {}

    def record(
        self, method: str, route: str, status: int, operational: bool, seconds: float, now: float
    ) -> None:
        """Count one request that ended at ``now`` (epoch seconds) after ``seconds``."""
        selected = self._selected.get((method, route, operational))
        if selected is None:
            selected = self._select(method, route, operational)
        if not selected:
            return
        minute = minute_of(now)
        for slo in selected:
            key = (slo.name, minute)
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = [0, 0]
            counts[0] += 1
            threshold = slo.threshold_seconds
            if (status < 500) if threshold is None else (seconds <= threshold):
                counts[1] += 1

    def _select(self, method: str, route: str, operational: bool) -> tuple[_Counted, ...]:
        # The histogram's labels for this request; the status is never in a selector.
        labels = {
            "http_request_method": method,
            "http_route": route,
            "slo": "false" if operational else "true",
            STATUS_LABEL: "",
        }
        selected = tuple(
            _Counted(objective.name, objective.threshold_seconds)
            for objective in self._objectives
            if all(matcher.matches(labels) for matcher in objective.selector)
        )
        self._selected[(method, route, operational)] = selected
        return selected

    def take(self) -> dict[Key, list[int]]:
        """Everything counted so far, handed over and forgotten here."""
        counts, self._counts = self._counts, {}
        return counts

    def give_back(self, counts: Mapping[Key, Sequence[int]]) -> None:
        """Counts a flush could not write, merged back; the oldest beyond the bound dropped."""
        for key, (total, good) in counts.items():
            mine = self._counts.setdefault(key, [0, 0])
            mine[0] += total
            mine[1] += good
        limit = MAX_PENDING_MINUTES * max(1, len(self._objectives))
        if len(self._counts) > limit:
            for key in sorted(self._counts, key=lambda k: k[1])[: len(self._counts) - limit]:
                del self._counts[key]
                self.metrics.dropped.inc()

    @property
    def pending(self) -> int:
        return len(self._counts)


def _upsert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(rollups)
    return statement.on_conflict_do_update(
        index_elements=[rollups.c.slo_name, rollups.c.minute],
        set_={
            "total": rollups.c.total + statement.excluded.total,
            "good": rollups.c.good + statement.excluded.good,
        },
    )


async def add_counts(database: Database, counts: Mapping[Key, Sequence[int]]) -> int:
    """Add ``counts`` to their rows (created at zero when missing); returns the rows touched.

    One statement for every row (SQLAlchemy sends it as multi-row batches); rows in
    key order, so two processes flushing at once lock shared rows in the same order.
    """
    rows = [
        {"slo_name": name, "minute": minute_start(minute), "total": total, "good": good}
        for (name, minute), (total, good) in sorted(counts.items())
        if total
    ]
    if rows:
        async with database.write() as session:
            await session.execute(_upsert(database.dialect), rows)
    return len(rows)


class RollupFlusher:
    """Moves a :class:`RollupCounter`'s counts to the database every ``flush_seconds``."""

    def __init__(
        self,
        database: Database,
        counter: RollupCounter,
        *,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._database = database
        self.counter = counter
        self._flush_seconds = flush_seconds
        self._task = BackgroundTask("slo-rollup-flush", self._run)

    async def flush(self) -> int:
        """Write what is counted now; on failure the counts wait for the next flush."""
        counts = self.counter.take()
        if not counts:
            return 0
        try:
            written = await add_counts(self._database, counts)
        except Exception as error:  # any failure: keep the counts, retry at the next flush
            self.counter.give_back(counts)
            self.counter.metrics.flushes.labels("failure").inc()
            log.warning(
                "slo_rollup_flush_failed",
                error=str(error) or type(error).__name__,
                pending=self.counter.pending,
            )
            return 0
        self.counter.metrics.flushes.labels("success").inc()
        return written

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        """The shutdown drain: stop the loop, then flush what the last requests counted."""
        await self._task.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self.flush()


async def prune(database: Database, before: datetime) -> int:
    """Delete rollups of minutes before ``before``; returns how many went."""
    async with database.write() as session:
        result = await session.execute(delete(rollups).where(rollups.c.minute < before))
    return int(getattr(result, "rowcount", 0) or 0)


def retention(objectives: Iterable[Objective]) -> timedelta:
    """How long rollups are kept: the longest SLO period plus a margin."""
    longest = max((objective.period_seconds for objective in objectives), default=30 * 86400)
    return timedelta(seconds=longest) + RETENTION_MARGIN


__all__ = [
    "FLUSH_OUTCOMES",
    "RollupCounter",
    "RollupFlusher",
    "add_counts",
    "minute_of",
    "minute_start",
    "prune",
    "retention",
]

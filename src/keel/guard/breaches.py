"""Breach tracking: every 429 recorded, in batches, off the request path.

``record()`` only appends to a bounded in-memory buffer (O(1), no I/O), so a
flood of refused requests cannot turn into a flood of database writes; a
background task writes the buffer in one multi-row INSERT every
``flush_seconds`` or as soon as it holds ``batch_size`` rows. If the buffer is
full the oldest rows are dropped and counted — losing a few breach rows under
attack is better than letting the attack load the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, insert, select, type_coerce

from keel.audit import AuditEvent, Auditor, EventCode
from keel.background import BackgroundTask
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables_limits import RateLimitBreach
from keel.db.types import UTCDateTime
from keel.errors import KeelError
from keel.keyed_hash import keyed_hash

log = structlog.get_logger(__name__)


class BreachMetrics:
    """Breaches counted, and breach rows a full buffer dropped, on ``registry``
    (``None``: registered nowhere)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.breaches = Counter(
            "keel_ratelimit_breaches_total",
            "Requests refused by a limit.",
            ["limit"],
            registry=registry,
        )
        self.dropped = Counter(
            "keel_ratelimit_breaches_dropped_total",
            "Breach rows dropped by a full buffer.",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class Breach:
    occurred_at: datetime
    limit_name: str
    key_kind: str
    org_id: str | None
    user_id: str | None
    ip: str | None
    retry_after: float = 0.0


class BreachRecorder:
    def __init__(
        self,
        database: Database,
        identity_key: bytes,
        *,
        batch_size: int = 500,
        flush_seconds: float = 2.0,
        max_buffer: int = 20_000,
        audit: Auditor | None = None,
        metrics: BreachMetrics | None = None,
    ) -> None:
        """``audit``: breaches also reach the audit log."""
        self._database = database
        self._identity_key = identity_key  # the logs' key: breach hashes join log lines
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._buffer: deque[Breach] = deque(maxlen=max_buffer)
        self._wake = asyncio.Event()
        self._flusher = BackgroundTask("breach-flush", self._run)
        self.audit = audit
        self._metrics = metrics if metrics is not None else BreachMetrics()

    def record(self, breach: Breach) -> None:
        self._metrics.breaches.labels(breach.limit_name).inc()
        if len(self._buffer) == self._buffer.maxlen:
            self._metrics.dropped.inc()
        self._buffer.append(breach)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> int:
        """Write what is buffered now; returns the number of rows written."""
        written = 0
        while self._buffer:
            batch = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            rows = [
                {
                    "occurred_at": b.occurred_at,
                    "limit_name": b.limit_name,
                    "key_kind": b.key_kind,
                    "org_id": b.org_id,
                    "user_hash": keyed_hash(self._identity_key, b.user_id) if b.user_id else None,
                    "ip_hash": keyed_hash(self._identity_key, b.ip) if b.ip else None,
                }
                for b in batch
            ]
            try:
                async with self._database.write() as session:
                    await session.execute(insert(RateLimitBreach), rows)
                    if self.audit is not None:
                        for event in _audit_events(batch):
                            await self.audit.record(session, event)
            except KeelError:
                self._buffer.extendleft(reversed(batch))  # keep them for the next flush
                raise
            written += len(rows)
        return written

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except KeelError as error:
                log.warning("breach_flush_failed", error=error.detail, pending=self.pending)

    def start(self) -> None:
        self._flusher.start()

    async def stop(self) -> None:
        await self._flusher.stop()
        with contextlib.suppress(KeelError):
            await self.flush()


def _audit_events(batch: list[Breach]) -> list[AuditEvent]:
    """One ``ratelimit.breached`` event per caller and limit in a batch, not one per 429."""
    worst: dict[tuple[str | None, str | None, str | None, str, str], float] = {}
    for b in batch:
        key = (b.org_id, b.user_id, b.ip, b.limit_name, b.key_kind)
        worst[key] = max(worst.get(key, 0.0), b.retry_after)
    return [
        AuditEvent(
            EventCode.RATE_LIMIT_BREACHED,
            org_id=org_id,
            actor_id=user_id,
            ip=ip,
            fields={"limit": limit, "scope": scope, "retry_after": math.ceil(retry_after)},
        )
        for (org_id, user_id, ip, limit, scope), retry_after in worst.items()
    ]


@dataclass(frozen=True, slots=True)
class Offender:
    limit_name: str
    org_id: str | None
    user_hash: str | None
    ip_hash: str | None
    breaches: int
    last_at: datetime


async def top_offenders(
    database: Database, *, since: timedelta, limit: int = 20, clock: Clock = SYSTEM_CLOCK
) -> list[Offender]:
    """Who was refused most in the last ``since``, by limit, org, user and IP."""
    start = clock.now() - since
    columns = (
        RateLimitBreach.limit_name,
        RateLimitBreach.org_id,
        RateLimitBreach.user_hash,
        RateLimitBreach.ip_hash,
    )
    count = func.count().label("breaches")
    query = (
        select(*columns, count, type_coerce(func.max(RateLimitBreach.occurred_at), UTCDateTime()))
        .where(RateLimitBreach.occurred_at >= start)
        .group_by(*columns)
        .order_by(count.desc())
        .limit(limit)
    )
    async with database.read() as session:
        rows = (await session.execute(query)).all()
    return [
        Offender(
            limit_name=row[0],
            org_id=row[1],
            user_hash=row[2],
            ip_hash=row[3],
            breaches=int(row[4]),
            last_at=row[5],
        )
        for row in rows
    ]

"""Authentication events, kept off the hot path.

An authenticated request must not cost a database write: the observability
benchmark measures the hot path, and a write per request would serialise an
organisation's traffic on its chain head. So:

- **success** is recorded when a token is checked against the database (a
  cache miss in :class:`~keel.domain.tokens.Authenticator`) — at most once
  per token per process per ``KEEL_AUTH_CACHE_SECONDS``. Cache hits reuse a
  check that was already audited.
- **failure** is counted in memory (a dict increment) and flushed every
  ``KEEL_AUDIT_AUTH_FAILURE_FLUSH_SECONDS`` as one ``auth.failed`` event per
  (reason, ip) with a count and the window, on the system chain (an unknown
  token names no organisation). A flood of bad tokens therefore costs one
  short write per window, not one per request; the counter keeps at most
  ``max_keys`` distinct keys and folds the rest into an ip-less bucket, so
  memory is bounded too. Shutdown flushes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from keel.audit.chain import FieldValue, timestamp
from keel.audit.events import AuditEvent
from keel.audit.registry import EventCode
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.domain.principal import Principal

if TYPE_CHECKING:
    from keel.audit.recorder import Auditor

log = structlog.get_logger(__name__)

MAX_KEYS = 1000


def _order(item: tuple[tuple[str, str | None], int]) -> tuple[str, str]:
    (reason, ip), _count = item
    return reason, ip or ""


class AuthenticationAudit:
    """What :class:`~keel.domain.tokens.Authenticator` reports to (its ``observer``)."""

    def __init__(
        self,
        auditor: Auditor,
        database: Database,
        *,
        flush_seconds: float = 10.0,
        max_keys: int = MAX_KEYS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._auditor = auditor
        self._database = database
        self._flush_seconds = flush_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._failures: dict[tuple[str, str | None], int] = {}
        self._window_start: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    async def succeeded(self, principal: Principal, ip: str | None) -> None:
        await self._auditor.record_now(
            AuditEvent(
                EventCode.AUTH_SUCCEEDED,
                org_id=principal.org_id,
                actor_id=principal.user_id,
                token_id=principal.token_id,
                ip=ip,
            )
        )

    def failed(self, reason: str, ip: str | None) -> None:
        if self._window_start is None:
            self._window_start = self._clock.now()
        key = (reason, ip)
        if key not in self._failures and len(self._failures) >= self._max_keys:
            key = (reason, None)
        self._failures[key] = self._failures.get(key, 0) + 1

    @property
    def pending(self) -> int:
        return sum(self._failures.values())

    async def flush(self) -> int:
        """Write the counted failures as events; returns how many failures were written."""
        if not self._failures or self._window_start is None:
            return 0
        failures, self._failures = self._failures, {}
        start, end = timestamp(self._window_start), timestamp(self._clock.now())
        self._window_start = None
        try:
            async with self._database.write() as session:
                for (reason, ip), count in sorted(failures.items(), key=_order):
                    fields: dict[str, FieldValue] = {
                        "reason": reason,
                        "count": count,
                        "window_start": start,
                        "window_end": end,
                    }
                    await self._auditor.record(
                        session, AuditEvent(EventCode.AUTH_FAILED, ip=ip, fields=fields)
                    )
        except Exception:
            # Put the counts back: they are written with the next window instead of lost.
            for key, count in failures.items():
                self._failures[key] = self._failures.get(key, 0) + count
            if self._window_start is None:
                self._window_start = self._clock.now()
            raise
        return sum(failures.values())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("audit_auth_failures_flush_failed", pending=self.pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="audit-auth-failures"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("audit_auth_failures_flush_failed", pending=self.pending)

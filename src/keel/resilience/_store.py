"""Where breakers share their state between processes: a Protocol and two backends.

When one process opens a breaker, the others should stop hammering the dependency too,
and an operator's ``keel breakers force-open NAME`` (a separate, short-lived process)
must reach every server. Each breaker publishes its transitions as a
:class:`BreakerRecord` stamped with wall-clock time, and reads the record back at most
once per ``sync_interval``; the newer record wins, on both sides.

Backends are picked from a URL (``memory://``, ``redis://host:port/db``), as ``limits``
does. Backend errors are translated into :class:`StateStoreUnavailable` at this seam;
breakers treat that as "carry on locally", so Redis going away never breaks a breaker.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from redis import asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from keel.errors import ConfigurationError
from keel.resilience._errors import StateStoreUnavailable
from keel.resilience._state import BreakerState, TransitionReason

NEVER = datetime(1970, 1, 1, tzinfo=UTC)
"""The ``changed_at`` of a breaker that has not changed state yet: older than any record."""


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """A breaker's shared state, as published by the process that last changed it."""

    name: str
    state: BreakerState
    changed_at: datetime
    reason: TransitionReason
    origin: str
    """Who wrote it: a breaker instance id, or ``operator`` for the CLI."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "state": self.state.value,
                "at": self.changed_at.timestamp(),
                "reason": self.reason.value,
                "origin": self.origin,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, name: str, raw: str | bytes) -> BreakerRecord:
        data = json.loads(raw)
        return cls(
            name=name,
            state=BreakerState(data["state"]),
            changed_at=datetime.fromtimestamp(float(data["at"]), tz=UTC),
            reason=TransitionReason(data["reason"]),
            origin=str(data["origin"]),
        )


@runtime_checkable
class BreakerStateStore(Protocol):
    """The seam between breakers and wherever their shared state lives."""

    async def publish(self, record: BreakerRecord) -> bool:
        """Store ``record`` unless a newer one is already there; True if it was stored."""
        ...

    async def read(self, name: str) -> BreakerRecord | None: ...

    async def read_all(self) -> list[BreakerRecord]:
        """Every breaker any process has published, sorted by name."""
        ...

    async def aclose(self) -> None: ...


class MemoryBreakerStateStore:
    """One process's store: breakers sharing it behave as if in separate processes."""

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}

    async def publish(self, record: BreakerRecord) -> bool:
        current = self._records.get(record.name)
        # Ties go to the last writer, so an operator acting "at the same instant" wins.
        if current is not None and current.changed_at > record.changed_at:
            return False
        self._records[record.name] = record
        return True

    async def read(self, name: str) -> BreakerRecord | None:
        return self._records.get(name)

    async def read_all(self) -> list[BreakerRecord]:
        return [self._records[name] for name in sorted(self._records)]

    async def aclose(self) -> None:
        return None


# Compare-and-set on the record's timestamp, atomically in Redis, so that two processes
# publishing at once can never let the older record overwrite the newer one.
_PUBLISH_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local at = cjson.decode(current)['at']
  if tonumber(at) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class RedisBreakerStateStore:
    """Records in one Redis hash (``{prefix}:breakers``), field = breaker name.

    Every operation is bounded by ``operation_timeout``: a breaker reads the store on a
    protected call's path (once per sync interval), so a hung Redis must cost little.
    The client's own retries are off for the same reason; the breaker retries next
    interval.
    """

    def __init__(
        self,
        client: redis_asyncio.Redis,
        *,
        prefix: str = "keel",
        operation_timeout: float = 0.25,
    ) -> None:
        self._client = client
        self._key = f"{prefix}:breakers"
        self._timeout = operation_timeout
        self._publish_script = client.register_script(_PUBLISH_IF_NEWER)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "keel", operation_timeout: float = 0.25
    ) -> RedisBreakerStateStore:
        client = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=operation_timeout,
            socket_connect_timeout=operation_timeout,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, prefix=prefix, operation_timeout=operation_timeout)

    async def publish(self, record: BreakerRecord) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                stored = await self._publish_script(
                    keys=[self._key],
                    args=[record.name, record.to_json(), repr(record.changed_at.timestamp())],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreUnavailable(f"breaker store: {type(exc).__name__}") from exc
        return bool(stored)

    async def read(self, name: str) -> BreakerRecord | None:
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._client.hget(self._key, name)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreUnavailable(f"breaker store: {type(exc).__name__}") from exc
        return None if raw is None else BreakerRecord.from_json(name, raw)

    async def read_all(self) -> list[BreakerRecord]:
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._client.hgetall(self._key)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreUnavailable(f"breaker store: {type(exc).__name__}") from exc
        records = [
            BreakerRecord.from_json(k.decode() if isinstance(k, bytes) else str(k), v)
            for k, v in raw.items()
        ]
        return sorted(records, key=lambda r: r.name)

    async def aclose(self) -> None:
        await self._client.aclose()


def store_from_url(url: str, **options: float | str) -> BreakerStateStore:
    """A store for a settings URL: ``memory://`` or ``redis://…`` / ``rediss://…``."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryBreakerStateStore()
    if scheme in ("redis", "rediss", "unix"):
        prefix = str(options.get("prefix", "keel"))
        timeout = float(options.get("operation_timeout", 0.25))
        return RedisBreakerStateStore.from_url(url, prefix=prefix, operation_timeout=timeout)
    raise ConfigurationError(f"unsupported breaker store URL scheme {scheme!r}")

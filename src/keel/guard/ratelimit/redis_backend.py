"""The shared limiter backend: Redis, one Lua script per decision.

Every decision is a single ``EVALSHA`` (one round trip, atomic across all
instances). The script's SHA1 is computed locally, so the steady state never
sends the script body; on ``NOSCRIPT`` (a restarted or flushed Redis) the
script is loaded with ``SCRIPT LOAD`` and the call retried once. All keys carry
TTLs so abandoned keys vanish on their own, and ``now`` is an argument:
Redis's clock is never consulted.

Redis failures and timeouts leave this module only as
:class:`~keel.guard.ratelimit.errors.LimiterUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from keel.guard.ratelimit import _lua
from keel.guard.ratelimit.backend import SlotDecision
from keel.guard.ratelimit.errors import LimiterUnavailable
from keel.guard.ratelimit.gcra import EPSILON, GcraDecision, Rate, gcra
from keel.guard.ratelimit.quota import (
    QuotaDecision,
    QuotaWindow,
    counted,
    counter_key,
    quota_decision,
)


class _Script:
    """A Lua script addressed by its SHA1, loaded on demand."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_GCRA = _Script(_lua.GCRA)
_QUOTA_CONSUME = _Script(_lua.QUOTA_CONSUME)
_QUOTA_REFUND = _Script(_lua.QUOTA_REFUND)
_SLOT_ACQUIRE = _Script(_lua.SLOT_ACQUIRE)
_SCRIPTS = (_GCRA, _QUOTA_CONSUME, _QUOTA_REFUND, _SLOT_ACQUIRE)


class RedisBackend:
    """A :class:`~keel.guard.ratelimit.backend.LimiterBackend` on ``redis.asyncio``.

    ``timeout`` bounds each call (seconds), so a slow Redis costs a request at
    most that much before the caller (usually
    :class:`~keel.guard.ratelimit.fallback.FallbackBackend`) decides locally.
    With ``timeout=None`` the client's own socket timeouts are the bound:
    :meth:`from_url` sets those and skips the extra ``asyncio.timeout``, which
    costs measurably on a path taken once per request per limit.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "keel:rl:",
        timeout: float | None = 0.25,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "keel:rl:", timeout: float = 0.25) -> RedisBackend:
        """A backend owning its own client; no connection is opened until first use.

        The client does not retry: a failed call is answered by the fallback
        at once instead of stacking reconnect backoffs onto the request.
        """
        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, prefix=prefix, timeout=None, owns_client=True)

    @property
    def client(self) -> Redis:
        return self._client

    async def load_scripts(self) -> None:
        """Preload every script (optional: calls load them on ``NOSCRIPT`` anyway)."""
        await self._call(self._load_all())

    async def _load_all(self) -> None:
        for script in _SCRIPTS:
            await self._client.script_load(script.source)

    async def _call(self, awaitable: Any) -> Any:
        try:
            if self._timeout is None:
                return await awaitable
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise LimiterUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    # --- GCRA ---------------------------------------------------------------

    async def gcra(self, key: str, rate: Rate, now: float, n: int = 1) -> GcraDecision:
        if n < 0:
            raise ValueError("n must not be negative")
        allowed, stored = await self._call(
            _GCRA(
                self._client,
                [self._prefix + "g:" + key],
                [repr(now), repr(rate.emission_interval), repr(rate.tolerance), n, repr(EPSILON)],
            )
        )
        decision = gcra(None if stored is None else float(stored), now, rate, n)
        if bool(allowed) != decision.allowed:  # pragma: no cover - float parity is tested
            raise LimiterUnavailable("redis: GCRA script and arithmetic disagree")
        return decision

    # --- quotas --------------------------------------------------------------

    async def quota_check(
        self, key: str, limit: int, window: QuotaWindow, now: float, n: int = 1
    ) -> QuotaDecision:
        bounds = window.bounds(now)
        raw = await self._call(self._client.get(self._quota_key(key, bounds)))
        return quota_decision(0 if raw is None else int(raw), limit, n, now, bounds)

    async def quota_consume(
        self,
        key: str,
        limit: int,
        window: QuotaWindow,
        now: float,
        n: int = 1,
        *,
        overdraft: bool = False,
    ) -> QuotaDecision:
        bounds = window.bounds(now)
        ttl_ms = max(1, math.ceil((bounds[1] - now) * 1000))
        ok, used = await self._call(
            _QUOTA_CONSUME(
                self._client,
                [self._quota_key(key, bounds)],
                [limit, n, ttl_ms, 1 if overdraft else 0],
            )
        )
        if ok:
            return counted(int(used), limit, now, bounds)
        return quota_decision(int(used), limit, n, now, bounds)

    async def quota_refund(
        self, key: str, window: QuotaWindow, consumed_at: float, n: int = 1
    ) -> None:
        bounds = window.bounds(consumed_at)
        await self._call(_QUOTA_REFUND(self._client, [self._quota_key(key, bounds)], [n]))

    def _quota_key(self, key: str, bounds: tuple[float, float]) -> str:
        return self._prefix + "q:" + counter_key(key, bounds)

    # --- concurrency slots ----------------------------------------------------

    async def slot_acquire(self, key: str, limit: int, lease: float, now: float) -> SlotDecision:
        slot_id = uuid.uuid4().hex
        ok, count, wait = await self._call(
            _SLOT_ACQUIRE(
                self._client,
                [self._prefix + "s:" + key],
                [repr(now), limit, repr(now + lease), slot_id],
            )
        )
        if ok:
            return SlotDecision(True, slot_id, int(count), limit, 0.0)
        return SlotDecision(False, None, int(count), limit, max(0.0, float(wait)))

    async def slot_release(self, key: str, slot_id: str) -> None:
        await self._call(self._client.zrem(self._prefix + "s:" + key, slot_id))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

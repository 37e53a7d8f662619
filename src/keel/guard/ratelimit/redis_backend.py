"""The shared limiter backend: Redis, one Lua script per decision.

Every decision is a single ``EVALSHA`` (one round trip, atomic across all
instances); a request's whole admission — every rate limit, quota and slot
it passes — is one call of the ``ADMIT`` script, all or nothing. The script's
SHA1 is computed locally, so the steady state never sends the script body;
on ``NOSCRIPT`` (a restarted or flushed Redis) the script is loaded with
``SCRIPT LOAD`` and the call retried once. All keys carry TTLs so abandoned
keys vanish on their own, and ``now`` is an argument: Redis's clock is never
consulted.

Script calls go over a *lane*: one connection the backend checks out of
redis-py's pool once and keeps, driven with redis-py's own
``send_packed_command``/``read_response``. That skips the pool checkout, retry
wrapper and per-command bookkeeping ``execute_command`` does each time, which
is most of redis-py's cost on a path taken once per request. The command is
packed by ``hiredis`` in C, as redis-py's synchronous client packs; its
asyncio connection packs in Python, which cost more than the rest of a
decision's Python. redis-py reads the reply with hiredis's parser too, since it
is installed. The lane serves one call at a time; a call that finds it busy
takes the ordinary pool path instead of waiting, so concurrency never queues
behind it. redis-py disconnects a connection whose command was interrupted
(error, timeout, cancellation), and the next call reconnects it, so no stale
reply can be read by a later call.

Redis failures and timeouts leave this module only as
:class:`~keel.guard.ratelimit.errors.LimiterUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import uuid
from collections.abc import Sequence
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from keel.guard.ratelimit import _lua
from keel.guard.ratelimit.backend import Admission, SlotDecision
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


_ADMIT = _Script(_lua.ADMIT)
_GCRA = _Script(_lua.GCRA)
_QUOTA_CONSUME = _Script(_lua.QUOTA_CONSUME)
_QUOTA_REFUND = _Script(_lua.QUOTA_REFUND)
_SLOT_ACQUIRE = _Script(_lua.SLOT_ACQUIRE)
_SCRIPTS = (_ADMIT, _GCRA, _QUOTA_CONSUME, _QUOTA_REFUND, _SLOT_ACQUIRE)


def _closed_transport(exc: RuntimeError) -> bool:
    """uvloop's word for a write on a socket that closed as it was used (Redis cut
    mid-connect): ``unable to perform operation on <TCPTransport closed=True …>``.
    redis-py lets it through unwrapped; it is an outage like any other."""
    return str(exc).startswith("unable to perform operation on") and "closed" in str(exc)


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
        self._lane: AbstractConnection | None = None
        self._lane_busy = False
        # Slot ids: random per backend (so per process), then a counter.
        self._slot_prefix = uuid.uuid4().hex[:12] + "-"
        self._slot_ids = itertools.count(1)

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

    async def _evalsha(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` on the lane if it is free, else through the pool."""
        if self._lane_busy:
            return await script(self._client, keys, args)
        self._lane_busy = True
        try:
            lane = self._lane
            if lane is None:
                # redis-py leaves get_connection unannotated; it returns a connection.
                pool = self._client.connection_pool
                lane = self._lane = await pool.get_connection()  # type: ignore[no-untyped-call]
            # Packed by hiredis in C (see the module docstring).
            command = pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
            try:
                await lane.send_packed_command(command)
                return await lane.read_response()
            except NoScriptError:
                await lane.send_command("SCRIPT", "LOAD", script.source)
                await lane.read_response()
                await lane.send_packed_command(command)
                return await lane.read_response()
        finally:
            self._lane_busy = False

    async def _call(self, awaitable: Any) -> Any:
        try:
            if self._timeout is None:
                return await awaitable
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise LimiterUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        except RuntimeError as exc:
            if not _closed_transport(exc):
                raise
            raise LimiterUnavailable(f"redis: connection closed under us: {exc}") from exc

    def _new_slot_id(self) -> str:
        return f"{self._slot_prefix}{next(self._slot_ids)}"

    # --- one request, every limit ---------------------------------------------

    async def admit(
        self,
        rates: Sequence[tuple[str, Rate]],
        quotas: Sequence[tuple[str, int, QuotaWindow]],
        slots: Sequence[tuple[str, int, float]],
        now: float,
        n: int = 1,
    ) -> Admission:
        if n < 0:
            raise ValueError("n must not be negative")
        prefix = self._prefix
        keys = [prefix + "g:" + key for key, _ in rates]
        # Floats go as they are: hiredis encodes them as redis-py does, with
        # repr(), the shortest form that round-trips, which Lua's tonumber
        # reads back exactly.
        args: list[Any] = [now, n, len(rates), len(quotas)]  # the slots: the keys left
        for _, rate in rates:
            args.append(rate.emission_interval)
            args.append(rate.tolerance)
        windows = []
        quota_prefix = prefix + "q:"
        for key, limit, window in quotas:
            bounds, suffix = window.span(now)
            windows.append(bounds)
            keys.append(quota_prefix + key + suffix)  # _quota_key(key, bounds)
            args.append(limit)
            args.append(max(1, math.ceil((bounds[1] - now) * 1000)))  # the counter's TTL
        ids = []
        for key, limit, lease in slots:
            slot_id = self._new_slot_id()
            ids.append(slot_id)
            keys.append(prefix + "s:" + key)
            args += (limit, now + lease, slot_id)
        reply = await self._call(self._evalsha(_ADMIT, keys, args))
        return _admission(reply, rates, quotas, slots, windows, ids, now, n)

    # --- GCRA ---------------------------------------------------------------

    async def gcra(self, key: str, rate: Rate, now: float, n: int = 1) -> GcraDecision:
        if n < 0:
            raise ValueError("n must not be negative")
        allowed, stored = await self._call(
            self._evalsha(
                _GCRA,
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
            self._evalsha(
                _QUOTA_CONSUME,
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
        await self._call(self._evalsha(_QUOTA_REFUND, [self._quota_key(key, bounds)], [n]))

    def _quota_key(self, key: str, bounds: tuple[float, float]) -> str:
        return self._prefix + "q:" + counter_key(key, bounds)

    # --- concurrency slots ----------------------------------------------------

    async def slot_acquire(self, key: str, limit: int, lease: float, now: float) -> SlotDecision:
        slot_id = self._new_slot_id()
        ok, count, wait = await self._call(
            self._evalsha(
                _SLOT_ACQUIRE,
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
        lane, self._lane = self._lane, None
        if lane is not None:
            await self._client.connection_pool.release(lane)
        if self._owns_client:
            await self._client.aclose()


def _admission(
    reply: list[Any],
    rates: Sequence[tuple[str, Rate]],
    quotas: Sequence[tuple[str, int, QuotaWindow]],
    slots: Sequence[tuple[str, int, float]],
    windows: list[tuple[float, float]],
    ids: list[str],
    now: float,
    n: int,
) -> Admission:
    """Readings from the ``ADMIT`` reply, computed with the memory backend's arithmetic."""
    admitted = reply[0] == 1
    expected = True
    readings = []
    at = 1
    for _, rate in rates:
        raw = reply[at]
        at += 1
        tat = None if raw is None else float(raw)
        decision = gcra(tat, now, rate, n)
        if not decision[0]:  # allowed
            expected = False
        elif not admitted:
            decision = gcra(tat, now, rate, 0)  # nothing was spent: the peek
        readings.append(decision)
    peeks = []
    for (_, limit, _), bounds in zip(quotas, windows, strict=True):
        quota = quota_decision(int(reply[at]), limit, n, now, bounds)
        if not quota[0]:  # allowed
            expected = False
        elif admitted:
            quota = quota._replace(used=quota[1] + n)  # reserved by the script
        peeks.append(quota)
        at += 1
    taken = []
    for (_, limit, _), slot_id in zip(slots, ids, strict=True):
        count = int(reply[at])
        wait = float(reply[at + 1])
        at += 2
        if count >= limit:
            expected = False
        if admitted:
            taken.append(SlotDecision(True, slot_id, count + 1, limit, 0.0))
        else:
            taken.append(SlotDecision(False, None, count, limit, max(0.0, wait)))
    if admitted != expected:  # pragma: no cover - float parity is tested
        raise LimiterUnavailable("redis: ADMIT script and arithmetic disagree")
    return Admission(admitted, tuple(readings), tuple(peeks), tuple(taken))

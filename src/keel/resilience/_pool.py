"""A pool of dependencies of one kind, one per key, made lazily from one template.

Webhooks are one *kind* of dependency but many *dependencies*: each organisation points
at its own host. One global ``webhooks`` breaker would let one tenant's dead endpoint
open the breaker for every organisation, so each host gets its own :class:`Dependency`
(breaker, bulkhead, retry budget) built from the same configured template and named
``<template>.<host>`` — which is what ``keel breakers list`` shows and what an operator
passes to ``keel breakers force-open``.

Keys come from outside (an organisation admin sets the webhook URL), so the pool is
bounded: at most ``max_members`` members, least recently used evicted first, and a
member unused for ``idle_seconds`` dropped on the next lookup. An evicted member's
record stays in the shared state store, so a host whose breaker was OPEN is still
OPEN when it comes back (the new breaker adopts the record on its first sync).

Metrics: the ``keel_dependency_*`` series of every member carry the template's name
(one bounded label); the breaker and bulkhead series carry the member's name and are
read from live members only, so their label set is bounded by ``max_members``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator

from keel.clock import SYSTEM_CLOCK, Clock
from keel.resilience._breaker import BreakerListener
from keel.resilience._config import DependencyConfig
from keel.resilience._dependency import Dependency
from keel.resilience._metrics import ResilienceMetrics
from keel.resilience._registry import BreakerRegistry
from keel.resilience._store import BreakerStateStore

_NAME_LIMIT = 64  # DependencyConfig.name's max_length
_VERBATIM = re.compile(r"[a-z0-9][a-z0-9.-]*(?::[0-9]{1,5})?")
_UNSAFE = re.compile(r"[^a-z0-9.-]+")


def member_name(template: str, key: str) -> str:
    """``<template>.<key>``, safe as a breaker name and a metric label, one per key.

    A plain lower-case host, with an optional port, is used as it is (the port after a
    ``_``: ``webhooks.hooks.example.com_8443``). Anything else — capitals, an IPv6
    literal, a name too long — is made safe and gains ``_h`` and a digest of the key, so
    two keys never share a breaker (a plain name cannot end in ``_h…``: ports are digits).
    """
    if _VERBATIM.fullmatch(key):
        name = f"{template}.{key.replace(':', '_')}"
        if len(name) <= _NAME_LIMIT:
            return name
    digest = "_h" + hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = _UNSAFE.sub("-", key.lower()).strip("-")
    head = f"{template}.{safe}" if safe else template
    return head[: _NAME_LIMIT - len(digest)] + digest


class DependencyPool:
    """Members by key, each a full :class:`Dependency` made from ``template``."""

    def __init__(
        self,
        template: DependencyConfig,
        *,
        max_members: int = 256,
        idle_seconds: float = 3600.0,
        clock: Clock = SYSTEM_CLOCK,
        store: BreakerStateStore | None = None,
        metrics: ResilienceMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        listeners: tuple[BreakerListener, ...] = (),
        registry: BreakerRegistry | None = None,
    ) -> None:
        if max_members < 1:
            raise ValueError("max_members must be at least 1")
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        self.name = template.name
        self.template = template
        self.max_members = max_members
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._store = store
        self._metrics = metrics
        self._sleep = sleep
        self._listeners = listeners
        self.registry = registry
        """Where members are registered while they live (the app's registry)."""
        # key → (member, monotonic time of last use); oldest use first.
        self._members: OrderedDict[str, tuple[Dependency, float]] = OrderedDict()
        self.evictions = 0

    def get(self, key: str) -> Dependency:
        """The member for ``key``, created on first use; marks it used now."""
        now = self._clock.monotonic()
        self._expire(now)
        entry = self._members.get(key)
        if entry is not None:
            self._members[key] = (entry[0], now)
            self._members.move_to_end(key)
            return entry[0]
        while len(self._members) >= self.max_members:
            self._evict(next(iter(self._members)))
        member = Dependency(
            self.template.model_copy(update={"name": member_name(self.name, key)}),
            clock=self._clock,
            store=self._store,
            metrics=self._metrics,
            sleep=self._sleep,
            listeners=self._listeners,
            metrics_name=self.name,
        )
        if self.registry is not None:
            self.registry.add(member.breaker)
        self._members[key] = (member, now)
        return member

    def _expire(self, now: float) -> None:
        while self._members:
            key, (_, used) = next(iter(self._members.items()))
            if now - used < self.idle_seconds:
                return
            self._evict(key)

    def _evict(self, key: str) -> None:
        member, _ = self._members.pop(key)
        self.evictions += 1
        if self.registry is not None:
            self.registry.remove(member.breaker)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[Dependency]:
        return iter([member for member, _ in self._members.values()])

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._members)


__all__ = ["DependencyPool", "member_name"]

"""Named breakers and the operator's levers on them.

Two audiences. The app holds a :class:`BreakerRegistry` (created in ``create_app``) that
owns its process's breakers and applies operator actions to them at once. The CLI
(``keel breakers list|force-open|force-closed|reset NAME``) runs in a separate process
with no breakers of its own: it calls the module functions below, which act on the
shared :class:`BreakerStateStore` only. Servers adopt the operator's record within their
``sync_interval`` because it is newer than anything they hold.

Actions follow resilience4j's: ``force_open`` → FORCED_OPEN (``transitionToForcedOpenState``),
``force_closed`` → CLOSED (``transitionToClosedState``, a fresh window), ``reset`` →
CLOSED with the window cleared even when already CLOSED.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import NotFound
from keel.resilience._breaker import BreakerListener, CircuitBreaker
from keel.resilience._config import BreakerConfig
from keel.resilience._metrics import ResilienceMetrics
from keel.resilience._state import BreakerState, TransitionReason, WindowSnapshot
from keel.resilience._store import NEVER, BreakerRecord, BreakerStateStore

OPERATOR = "operator"
"""The ``origin`` of records written by the CLI."""

_ACTIONS: dict[str, tuple[BreakerState, TransitionReason]] = {
    "force_open": (BreakerState.FORCED_OPEN, TransitionReason.OPERATOR),
    "force_closed": (BreakerState.CLOSED, TransitionReason.OPERATOR),
    "reset": (BreakerState.CLOSED, TransitionReason.RESET),
    "disable": (BreakerState.DISABLED, TransitionReason.OPERATOR),
    "metrics_only": (BreakerState.METRICS_ONLY, TransitionReason.OPERATOR),
}


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """What ``keel breakers list`` shows for one breaker."""

    name: str
    state: BreakerState
    changed_at: datetime | None
    reason: TransitionReason | None
    window: WindowSnapshot | None
    """This process's window; None when listed from the store alone (the CLI)."""


class BreakerRegistry:
    """The breakers of one process, by name, sharing one store, clock and metrics."""

    def __init__(
        self,
        *,
        store: BreakerStateStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
        metrics: ResilienceMetrics | None = None,
        listeners: tuple[BreakerListener, ...] = (),
        members: tuple[CircuitBreaker, ...] = (),
    ) -> None:
        """``members``: breakers built before the registry (the ``database`` breaker,
        which the audit log's database needs before the audit listener exists); they
        join it now and hear ``listeners`` like every other."""
        self.store = store
        self._clock = clock
        self._metrics = metrics
        self._listeners = list(listeners)
        self._breakers: dict[str, CircuitBreaker] = {}
        for member in members:
            self.add(member)

    def add(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Register a breaker built elsewhere (a ``Dependency``'s); names are unique."""
        if self._breakers.setdefault(breaker.name, breaker) is not breaker:
            raise ValueError(f"a breaker named {breaker.name!r} is already registered")
        for listener in self._listeners:
            breaker.add_listener(listener)
        return breaker

    def remove(self, breaker: CircuitBreaker) -> None:
        """Forget ``breaker`` (a pool evicted it); its record in the store stays."""
        if self._breakers.get(breaker.name) is breaker:
            del self._breakers[breaker.name]

    def breaker(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """The breaker called ``name``, created with ``config`` on first use."""
        existing = self._breakers.get(name)
        if existing is not None:
            return existing
        return self.add(
            CircuitBreaker(name, config, clock=self._clock, store=self.store, metrics=self._metrics)
        )

    def add_listener(self, listener: BreakerListener) -> None:
        """Subscribe to the transitions of every breaker, present and future."""
        self._listeners.append(listener)
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self._breakers.values())

    def get(self, name: str) -> CircuitBreaker | None:
        return self._breakers.get(name)

    async def list(self) -> list[BreakerStatus]:
        """This process's breakers, plus any other the store knows of."""
        statuses = {
            b.name: BreakerStatus(
                b.name,
                b.state,
                b.changed_at if b.changed_at != NEVER else None,
                None,
                b.snapshot(),
            )
            for b in self._breakers.values()
        }
        if self.store is not None:
            for record in await self.store.read_all():
                statuses.setdefault(record.name, _status_of(record))
        return [statuses[name] for name in sorted(statuses)]

    async def force_open(self, name: str) -> BreakerStatus:
        return await self._act(name, "force_open")

    async def force_closed(self, name: str) -> BreakerStatus:
        return await self._act(name, "force_closed")

    async def reset(self, name: str) -> BreakerStatus:
        return await self._act(name, "reset")

    async def disable(self, name: str) -> BreakerStatus:
        return await self._act(name, "disable")

    async def metrics_only(self, name: str) -> BreakerStatus:
        return await self._act(name, "metrics_only")

    async def _act(self, name: str, action: str) -> BreakerStatus:
        target, reason = _ACTIONS[action]
        breaker = self._breakers.get(name)
        if breaker is None:
            if self.store is None:
                raise NotFound(f"no circuit breaker named {name!r}")
            record = await _act_on_store(self.store, name, action, self._clock, False)
            return _status_of(record)
        breaker.transition_to(target, reason)
        await breaker.flush()  # listeners and the store hear of it before we answer
        return BreakerStatus(name, breaker.state, breaker.changed_at, reason, breaker.snapshot())


def _status_of(record: BreakerRecord) -> BreakerStatus:
    return BreakerStatus(record.name, record.state, record.changed_at, record.reason, None)


async def _act_on_store(
    store: BreakerStateStore, name: str, action: str, clock: Clock, allow_unknown: bool
) -> BreakerRecord:
    target, reason = _ACTIONS[action]
    if not allow_unknown and await store.read(name) is None:
        # A typo must not silently force nothing; a server registers its breakers in the
        # store on their first call, so a name it uses is known.
        raise NotFound(f"no circuit breaker named {name!r} in the store")
    record = BreakerRecord(name, target, clock.now(), reason, OPERATOR)
    await store.publish(record)
    return record


# --- the CLI's functions: typed, awaitable, nothing but the store ------------------


async def list_breakers(store: BreakerStateStore) -> list[BreakerRecord]:
    """``keel breakers list``: every breaker some process has published, by name."""
    return await store.read_all()


async def force_open_breaker(
    store: BreakerStateStore, name: str, *, clock: Clock = SYSTEM_CLOCK, allow_unknown: bool = False
) -> BreakerRecord:
    """``keel breakers force-open NAME``: every process rejects calls until told otherwise."""
    return await _act_on_store(store, name, "force_open", clock, allow_unknown)


async def force_closed_breaker(
    store: BreakerStateStore, name: str, *, clock: Clock = SYSTEM_CLOCK, allow_unknown: bool = False
) -> BreakerRecord:
    """``keel breakers force-closed NAME``: back to CLOSED (normal operation) everywhere."""
    return await _act_on_store(store, name, "force_closed", clock, allow_unknown)


async def reset_breaker(
    store: BreakerStateStore, name: str, *, clock: Clock = SYSTEM_CLOCK, allow_unknown: bool = False
) -> BreakerRecord:
    """``keel breakers reset NAME``: CLOSED with every process's window cleared."""
    return await _act_on_store(store, name, "reset", clock, allow_unknown)


async def disable_breaker(
    store: BreakerStateStore, name: str, *, clock: Clock = SYSTEM_CLOCK, allow_unknown: bool = False
) -> BreakerRecord:
    """DISABLED everywhere: calls always pass, nothing is recorded."""
    return await _act_on_store(store, name, "disable", clock, allow_unknown)


async def metrics_only_breaker(
    store: BreakerStateStore, name: str, *, clock: Clock = SYSTEM_CLOCK, allow_unknown: bool = False
) -> BreakerRecord:
    """METRICS_ONLY everywhere: outcomes recorded and exported, never tripping."""
    return await _act_on_store(store, name, "metrics_only", clock, allow_unknown)

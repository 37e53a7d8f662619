"""An asyncio-native circuit breaker with resilience4j's semantics.

Why not pybreaker: it holds one lock across the protected call, so concurrent calls run
one at a time, and it counts consecutive failures rather than a rate. Here the breaker
does O(1) bookkeeping before a call (may it run?) and after it (what happened?), and
never holds anything while the call is awaited: fifty slow calls run as fifty.

The work a state change causes — listeners (the audit log), publishing to the shared
store — may await, so it is queued at the change and delivered by the next ``flush``,
which :meth:`CircuitBreaker.call` does itself. The structlog line and the counters are
written at once. A permit carries the state's *epoch*: an outcome that arrives after the
state changed under it (a call admitted while CLOSED that ends after the trip) is counted
in metrics but never lands in the new state's window, and never counts as a probe.
"""

from __future__ import annotations

import inspect
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import wraps
from typing import ParamSpec, TypeVar

import structlog

from keel.clock import SYSTEM_CLOCK, Clock
from keel.resilience._config import BreakerConfig, WindowType
from keel.resilience._errors import BreakerOpen, retry_after_seconds
from keel.resilience._metrics import BreakerStats, ResilienceMetrics, default_metrics
from keel.resilience._state import (
    RULES,
    BreakerState,
    BreakerTransition,
    IllegalTransition,
    Transition,
    TransitionReason,
    WindowSnapshot,
)
from keel.resilience._store import NEVER, BreakerRecord, BreakerStateStore
from keel.resilience._window import FAILED, SLOW, CountWindow, SlidingWindow, TimeWindow

P = ParamSpec("P")
T = TypeVar("T")

BreakerListener = Callable[[BreakerTransition], Awaitable[None] | None]

_log = structlog.get_logger("keel.resilience.breaker")

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN

_IGNORED, _FAILURE, _SUCCESS = 0, 1, 2


class CircuitBreaker:
    """One breaker guarding one dependency; see the module docstring for the design."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        store: BreakerStateStore | None = None,
        metrics: ResilienceMetrics | None = None,
        listeners: tuple[BreakerListener, ...] = (),
    ) -> None:
        self.name = name
        self.config = config = config if config is not None else BreakerConfig()
        self._clock = clock
        self._mono: Callable[[], float] = clock.monotonic
        self._store = store
        self._origin = f"{name}:{uuid.uuid4().hex[:12]}"
        self._listeners: list[BreakerListener] = list(listeners)

        self._window_size = size = config.window_size
        self._window: SlidingWindow = (
            CountWindow(size) if config.window_type is WindowType.COUNT else TimeWindow(size)
        )
        # True while a full count window holds nothing but successes: recording one more
        # then changes nothing (the slots are all alike), so _record skips the window.
        self._clean = False
        self._cleanable = config.window_type is WindowType.COUNT
        self._permitted_probes = config.permitted_number_of_calls_in_half_open_state
        self._probe_window = CountWindow(self._permitted_probes)
        self._min_calls = config.effective_minimum_calls
        self._failure_threshold = config.failure_rate_threshold
        self._slow_threshold = config.slow_call_rate_threshold
        self._slow_duration = config.slow_call_duration_threshold
        self._record_result = config.record_result
        self._classified: dict[type[BaseException], int] = {}

        self._state = BreakerState(config.initial_state)
        self._rules = RULES[self._state]  # what the current state does with calls
        self._epoch = 0
        self._changed_at: datetime = NEVER
        self._open_until = 0.0
        # The wait of the current (or next) stay in OPEN: the configured one after a
        # trip, multiplied by each failed round of probes up to the cap (_transition).
        self._open_wait = config.wait_duration_in_open_state
        self._probes_left = 0

        self._pending: deque[tuple[BreakerTransition, BreakerRecord | None]] = deque()
        self._flushing = False
        self._next_sync = float("-inf") if store is not None else float("inf")
        self._syncing = False
        self._unpublished: BreakerRecord | None = None
        self._store_healthy = True

        self._n_success = self._n_failure = self._n_slow = self._n_ignored = 0
        self._n_not_permitted = 0
        self._n_transitions: dict[tuple[BreakerState, BreakerState], int] = {}
        (metrics if metrics is not None else default_metrics()).watch_breaker(self)

    # --- reading -------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def changed_at(self) -> datetime:
        """Wall-clock time of the last change (``NEVER`` before the first)."""
        return self._changed_at

    def snapshot(self) -> WindowSnapshot:
        """The window that decides the next transition (the probes' one in HALF_OPEN)."""
        if self._state is _HALF_OPEN:
            return self._probe_window.snapshot(self._mono())
        return self._window.snapshot(self._mono())

    def stats(self) -> BreakerStats:
        return BreakerStats(
            name=self.name,
            state=self._state,
            calls={
                "success": self._n_success,
                "failure": self._n_failure,
                "slow": self._n_slow,
                "ignored": self._n_ignored,
            },
            not_permitted=self._n_not_permitted,
            transitions=dict(self._n_transitions),
        )

    @property
    def open_wait(self) -> float:
        """Seconds the current (or next) stay in OPEN lasts before probes are let through."""
        return self._open_wait

    def retry_in(self) -> float:
        """Seconds until this breaker may let a call through (0 when it lets them now)."""
        state = self._state
        if state is _OPEN:
            return max(0.0, self._open_until - self._mono())
        if state is _HALF_OPEN:
            return 1.0 if self._probes_left <= 0 else 0.0
        if state is _FORCED_OPEN:
            return self.config.wait_duration_in_open_state
        return 0.0

    @property
    def epoch(self) -> int:
        """The current state's permit token (changes with every transition)."""
        return self._epoch

    @property
    def clock_monotonic(self) -> Callable[[], float]:
        """The breaker's monotonic clock, for callers timing calls outside ``call``."""
        return self._mono

    @property
    def sync_due(self) -> bool:
        """Whether the shared store should be read before the next call (see ``call``)."""
        return self._store is not None and self._mono() >= self._next_sync

    @property
    def has_pending(self) -> bool:
        """Whether transitions wait for ``flush`` to reach listeners and the store."""
        return bool(self._pending)

    def add_listener(self, listener: BreakerListener) -> None:
        """Subscribe to transitions; a listener's failure is logged, never raised."""
        self._listeners.append(listener)

    # --- the protected call ----------------------------------------------------------

    async def run(self, awaitable: Awaitable[T], /) -> T:
        """``await awaitable`` if the breaker permits it, and record how it went.

        The lean form of :meth:`call` for a caller that already holds the awaitable
        (``await breaker.run(fetch(key))``): nothing to forward. A refused coroutine is
        closed, never awaited, so it neither runs nor warns. Raises
        :class:`BreakerOpen` when not permitted.
        """
        try:
            token = await self._permit()
        except BaseException:
            _discard(awaitable)
            raise
        return await self._measured(token, awaitable)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` if the breaker permits it, and record how it went.

        Raises :class:`BreakerOpen` when not permitted (``fn`` is then never called);
        otherwise returns or raises what ``fn`` does.
        """
        token = await self._permit()
        return await self._measured(token, fn(*args, **kwargs))

    async def _permit(self) -> int:
        """Read the shared store if a read is due, then take a permit (or BreakerOpen)."""
        if self._mono() >= self._next_sync:  # never without a store (+inf)
            await self.sync()
        return self.acquire_permission()

    async def _measured(self, token: int, awaitable: Awaitable[T]) -> T:
        """Await a permitted call, timing it, and record its outcome under ``token``."""
        mono = self._mono
        start = mono()
        try:
            result = await awaitable
        except BaseException as exc:
            self.on_error(token, exc, mono() - start)
            if self._pending:
                await self.flush()
            raise
        end = mono()
        self.on_result(token, result, end - start, end)
        if self._pending:
            await self.flush()
        return result

    def protect(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorator form of :meth:`call`."""

        @wraps(fn)
        async def protected(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return protected

    # --- the bookkeeping, usable without ``call`` (all O(1), none awaits) -------------

    def acquire_permission(self) -> int:
        """A permit (the state's epoch) for one call, or :class:`BreakerOpen`."""
        if self._rules.permits_all:
            return self._epoch
        state = self._state
        if state is _OPEN:
            now = self._mono()
            if now < self._open_until:
                raise self._rejection(self._open_until - now)
            self._transition(_HALF_OPEN, TransitionReason.WAIT_ELAPSED)
            state = _HALF_OPEN
        if state is _HALF_OPEN and self._probes_left > 0:
            self._probes_left -= 1
            return self._epoch
        raise self._rejection(
            1.0 if state is _HALF_OPEN else self.config.wait_duration_in_open_state
        )

    def release_permission(self, token: int) -> None:
        """Give back a probe permit whose call ended without a verdict (ignored)."""
        if token == self._epoch and self._state is _HALF_OPEN:
            self._probes_left += 1

    def on_result(
        self, token: int, result: object, duration: float, now: float | None = None
    ) -> None:
        """Record a call that returned ``result``; the result predicate may call it failed.

        ``now`` is the monotonic time the call ended (read from the clock if omitted).
        """
        code = SLOW if duration > self._slow_duration else 0
        predicate = self._record_result
        if predicate is not None and predicate(result):
            code |= FAILED
        self._record(token, code, now)

    def on_success(self, token: int, duration: float, now: float | None = None) -> None:
        """Record a call that returned, without asking the result predicate."""
        self._record(token, SLOW if duration > self._slow_duration else 0, now)

    def on_error(
        self, token: int, error: BaseException, duration: float, now: float | None = None
    ) -> None:
        """Record a call that raised ``error``, classified by the record/ignore lists."""
        kind = self._classified.get(type(error))
        if kind is None:
            kind = self._classify(type(error))
        slow = SLOW if duration > self._slow_duration else 0
        if kind == _FAILURE:
            self._record(token, FAILED | slow, now)
        elif kind == _SUCCESS:
            self._record(token, slow, now)
        else:
            if self._state is not BreakerState.DISABLED:
                self._n_ignored += 1
            self.release_permission(token)

    def on_failure(self, token: int, duration: float, now: float | None = None) -> None:
        """Record a failed call that the caller classified itself (no exception to ask)."""
        self._record(token, FAILED | (SLOW if duration > self._slow_duration else 0), now)

    def counts_as_failure(self, error: BaseException) -> bool:
        """Whether this breaker records ``error`` as a failure of the dependency."""
        kind = self._classified.get(type(error))
        return (kind if kind is not None else self._classify(type(error))) == _FAILURE

    def _classify(self, error_type: type[BaseException]) -> int:
        config = self.config
        if not issubclass(error_type, Exception) or issubclass(
            error_type, config.ignore_exceptions
        ):
            kind = _IGNORED
        elif issubclass(error_type, config.record_exceptions):
            kind = _FAILURE
        else:
            kind = _SUCCESS
        self._classified[error_type] = kind
        return kind

    def _record(self, token: int, code: int, now: float | None) -> None:
        """Count an outcome, and let the window of the current state decide."""
        if token != self._epoch or not self._rules.records:
            self._record_other(token, code)
            return
        if not code:
            self._n_success += 1
            if self._clean:
                return
        elif code & FAILED:
            self._n_failure += 1
        else:
            self._n_slow += 1
        window = self._window
        if window.record(code, self._mono() if now is None else now):
            self._check_thresholds()
        self._clean = (
            not code
            and self._cleanable
            and window.calls == self._window_size
            and not window.failed
            and not window.slow
        )

    def _check_thresholds(self) -> None:
        if self._rules.trips:
            window = self._window
            calls = window.calls
            if calls < self._min_calls:
                return
            if window.failed * 100.0 >= self._failure_threshold * calls:
                self._transition(_OPEN, TransitionReason.FAILURE_RATE_EXCEEDED)
            elif window.slow * 100.0 >= self._slow_threshold * calls:
                self._transition(_OPEN, TransitionReason.SLOW_CALL_RATE_EXCEEDED)

    def _record_other(self, token: int, code: int) -> None:
        current = token == self._epoch
        if current and self._state is not _HALF_OPEN:
            return  # DISABLED records nothing (OPEN and FORCED_OPEN issue no permits)
        if not code:
            self._n_success += 1
        elif code & FAILED:
            self._n_failure += 1
        else:
            self._n_slow += 1
        if not current:
            return  # the state changed while the call ran: metrics only
        probes = self._probe_window
        probes.record(code, 0.0)
        if probes.calls >= self._permitted_probes:
            self._decide_probes(probes)

    def _decide_probes(self, probes: CountWindow) -> None:
        calls = probes.calls
        if (
            probes.failed * 100.0 >= self._failure_threshold * calls
            or probes.slow * 100.0 >= self._slow_threshold * calls
        ):
            self._transition(_OPEN, TransitionReason.PROBES_FAILED)
        else:
            self._transition(_CLOSED, TransitionReason.PROBES_SUCCEEDED)

    def _rejection(self, retry_in: float) -> BreakerOpen:
        self._n_not_permitted += 1
        return BreakerOpen(self.name, self._state.value, retry_after=retry_after_seconds(retry_in))

    # --- transitions -------------------------------------------------------------------

    def _transition(
        self,
        to: BreakerState,
        reason: TransitionReason,
        *,
        publish: bool = True,
        at: datetime | None = None,
        open_elapsed: float = 0.0,
    ) -> BreakerTransition:
        transition = Transition.between(self._state, to)  # IllegalTransition if not in table
        window = self.snapshot()
        self._state = to
        self._epoch += 1
        self._changed_at = at if at is not None else self._clock.now()
        self._rules = RULES[to]
        if to is _CLOSED or to is BreakerState.METRICS_ONLY:
            self._window.clear()  # a fresh start, as resilience4j's new ClosedState
            self._clean = False
            self._open_wait = self.config.wait_duration_in_open_state
        elif to is _OPEN:
            if reason is TransitionReason.PROBES_FAILED:
                self._open_wait = self.config.next_wait_in_open_state(self._open_wait)
            else:
                self._open_wait = self.config.wait_duration_in_open_state
            self._open_until = self._mono() + self._open_wait - open_elapsed
        elif to is _HALF_OPEN:
            self._probes_left = self._permitted_probes
            self._probe_window.clear()
        pair = (transition.from_state, to)
        self._n_transitions[pair] = self._n_transitions.get(pair, 0) + 1

        event = BreakerTransition(self.name, transition, reason, self._changed_at, window)
        log = _log.warning if to in (_OPEN, _FORCED_OPEN) else _log.info
        log(
            "breaker_state_changed",
            breaker=self.name,
            from_state=transition.from_state.value,
            to_state=to.value,
            reason=reason.value,
            calls=window.calls,
            failure_rate=round(window.failure_rate, 2),
            slow_call_rate=round(window.slow_call_rate, 2),
        )
        # HALF_OPEN stays local: each process probes for itself; the verdict is shared.
        record = None
        if publish and to is not _HALF_OPEN and self._store is not None:
            record = BreakerRecord(self.name, to, self._changed_at, reason, self._origin)
        self._pending.append((event, record))
        return event

    def transition_to(self, to: BreakerState, reason: TransitionReason) -> bool:
        """Move to ``to`` now (an operator's or a test's action); False if already there.

        Follow with ``await flush()`` so listeners and the shared store hear of it.
        """
        if to is self._state and reason is not TransitionReason.RESET:
            return False
        self._transition(to, reason)
        return True

    async def flush(self) -> None:
        """Deliver queued transitions to listeners and the store, in order."""
        if self._flushing:
            return  # the running flush drains the queue; a second one would reorder it
        self._flushing = True
        try:
            while self._pending:
                event, record = self._pending.popleft()
                for listener in tuple(self._listeners):
                    try:
                        outcome = listener(event)
                        if inspect.isawaitable(outcome):
                            await outcome
                    except Exception:  # a listener must never break the breaker
                        _log.exception("breaker_listener_failed", breaker=self.name)
                if record is not None and self._store is not None:
                    await self._publish(self._store, record)
        finally:
            self._flushing = False

    # --- the shared store --------------------------------------------------------------

    async def _publish(self, store: BreakerStateStore, record: BreakerRecord) -> None:
        try:
            await store.publish(record)
        except Exception as exc:  # the store failing must never break the breaker
            self._unpublished = record
            self._store_unhealthy(exc)
        else:
            self._unpublished = None
            self._store_recovered()

    async def sync(self) -> None:
        """Adopt a newer shared record, and publish ours if the store has none."""
        store = self._store
        if store is None or self._syncing:
            return
        self._syncing = True
        self._next_sync = self._mono() + self.config.sync_interval
        try:
            if self._unpublished is not None:
                await store.publish(self._unpublished)
                self._unpublished = None
            record = await store.read(self.name)
            if record is None and self._state is not _HALF_OPEN:
                await store.publish(
                    BreakerRecord(
                        self.name,
                        self._state,
                        self._changed_at,
                        TransitionReason.OPERATOR,
                        self._origin,
                    )
                )
        except Exception as exc:  # the store failing must never break the breaker
            self._store_unhealthy(exc)
            return
        finally:
            self._syncing = False
        self._store_recovered()
        if record is not None:
            self._adopt(record)
        if self._pending:
            await self.flush()

    def _adopt(self, record: BreakerRecord) -> None:
        if record.changed_at <= self._changed_at or record.origin == self._origin:
            return
        target, current = record.state, self._state
        open_elapsed = max(0.0, (self._clock.now() - record.changed_at).total_seconds())
        if target is _HALF_OPEN or (target is _OPEN and current.is_operator_state):
            return  # probing is local; outcomes never override an operator
        reason = (
            TransitionReason.RESET
            if record.reason is TransitionReason.RESET
            else TransitionReason.REMOTE
        )
        if target is current and reason is not TransitionReason.RESET:
            self._changed_at = record.changed_at
            if target is _OPEN:  # wait from the newer opening, as the other process does
                self._open_until = self._mono() + (self._open_wait - open_elapsed)
            return
        try:
            self._transition(
                target, reason, publish=False, at=record.changed_at, open_elapsed=open_elapsed
            )
        except IllegalTransition:
            _log.warning(
                "breaker_record_ignored",
                breaker=self.name,
                from_state=current.value,
                to_state=target.value,
            )

    def _store_unhealthy(self, exc: Exception) -> None:
        if self._store_healthy:
            self._store_healthy = False
            _log.warning("breaker_store_unavailable", breaker=self.name, error=type(exc).__name__)

    def _store_recovered(self) -> None:
        if not self._store_healthy:
            self._store_healthy = True
            _log.info("breaker_store_recovered", breaker=self.name)


def _discard(awaitable: Awaitable[object]) -> None:
    """Close a refused coroutine so it never runs (and never warns it was not awaited)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


__all__ = ["BreakerListener", "CircuitBreaker"]

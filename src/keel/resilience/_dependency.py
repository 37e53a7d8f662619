"""One composition of timeout, bulkhead, breaker, retry and fallback per dependency.

The nesting, innermost first — ``fallback(retry(breaker(bulkhead(timeout(fn)))))``:

* **timeout** innermost, so it bounds one *attempt*, and a hung attempt reaches the
  breaker as a failure (``DependencyTimeout``) — the breaker learns from timeouts;
* **bulkhead** inside the breaker, so a call the breaker rejects never takes a slot, and
  a slot is held only while an attempt runs, never across a retry's backoff. A full
  bulkhead is our own saturation, not the dependency's fault: the breaker ignores it;
* **breaker** inside retry, as in resilience4j's default aspect order
  (``Retry(CircuitBreaker(…(Bulkhead(fn))))``): every attempt is a call the breaker sees,
  and once it opens the next attempt fails fast with ``BreakerOpen``, which is never
  retried — retries cannot hammer an open dependency;
* **retry** next, bounded by attempts, total time and the dependency's retry budget;
* **fallback** outermost, so it answers for whatever the layers below gave up on.

Errors surface as ``DependencyUnavailable`` subclasses with ``retry_after`` set (503 +
``Retry-After`` at the API). Exceptions the breaker does not count as failures (a 404 from
storage, a validation error) are the caller's business and pass through unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import DependencyUnavailable
from keel.resilience._breaker import BreakerListener, CircuitBreaker
from keel.resilience._bulkhead import Bulkhead
from keel.resilience._config import DependencyConfig
from keel.resilience._errors import BreakerOpen, BulkheadFull, DependencyFailed, DependencyTimeout
from keel.resilience._metrics import ResilienceMetrics, default_metrics
from keel.resilience._registry import BreakerRegistry
from keel.resilience._retry import RetryBudget, RetryPolicy
from keel.resilience._store import BreakerStateStore

P = ParamSpec("P")
T = TypeVar("T")

Fallback = Callable[[DependencyUnavailable], Awaitable[T] | T]
"""Called with the error that would otherwise be raised; its answer is the call's."""


class Dependency:
    """One external dependency ("storage", "redis", "webhooks") and its protections."""

    def __init__(
        self,
        config: DependencyConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        store: BreakerStateStore | None = None,
        metrics: ResilienceMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        listeners: tuple[BreakerListener, ...] = (),
        metrics_name: str | None = None,
    ) -> None:
        self.name = name = config.name
        self.config = config
        metrics = metrics if metrics is not None else default_metrics()
        # The ``keel_dependency_*`` series are labelled ``metrics_name`` (default: the
        # name). A pool's members (one per webhook host) share their template's label, so
        # those series stay bounded however many hosts come and go; the breaker's and the
        # bulkhead's own series carry the member's name and leave with the member.
        label = metrics_name if metrics_name is not None else name
        self._clock = clock
        # A timed-out attempt is the dependency's failure whatever the record list says
        # (a list naming only the dependency's own errors would otherwise count a hang as
        # a success); a full bulkhead is our own saturation and never its failure.
        breaker_config = config.breaker.model_copy(
            update={
                "record_exceptions": (*config.breaker.record_exceptions, DependencyTimeout),
                "ignore_exceptions": (*config.breaker.ignore_exceptions, BulkheadFull),
            }
        )
        self.breaker = CircuitBreaker(
            name, breaker_config, clock=clock, store=store, metrics=metrics, listeners=listeners
        )
        self.bulkhead = Bulkhead(name, config.bulkhead, metrics=metrics)
        self.budget = RetryBudget.from_config(config.retry, clock=clock)

        self._calls = {
            outcome: metrics.dependency_calls.labels(label, outcome)
            for outcome in ("success", "failure", "timeout", "rejected", "client_error")
        }
        self._duration = metrics.dependency_duration.labels(label)
        self._fallbacks = metrics.dependency_fallbacks.labels(label)
        rejections = {
            reason: metrics.dependency_rejections.labels(label, reason)
            for reason in ("breaker_open", "bulkhead_full", "retry_budget")
        }
        self._rejections = rejections
        self.retry = RetryPolicy(
            config.retry,
            budget=self.budget,
            clock=clock,
            sleep=sleep,
            on_retry=metrics.dependency_retries.labels(label).inc,
            on_budget_denied=rejections["retry_budget"].inc,
            also_require=self.breaker.counts_as_failure,
        )

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        idempotent: bool = False,
        fallback: Fallback[T] | None = None,
        **kwargs: Any,
    ) -> T:
        """``await fn(*args, **kwargs)`` under every protection of this dependency.

        ``idempotent=True`` allows retries: pass it for reads, and for writes only when
        they carry an idempotency key the dependency honours. (Arguments are untyped here
        because a ParamSpec cannot be followed by keyword options; :meth:`protect` keeps
        the wrapped function's full signature.)
        """
        started = self._clock.monotonic()
        try:
            result = await self.retry.run(
                lambda: self._attempt(fn, args, kwargs), idempotent=idempotent
            )
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise  # cancellation and interrupts are nobody's failure
            error = self._surface(exc)
            if error is None:
                self._calls["client_error"].inc()
                raise
            if fallback is None:
                if error is exc:
                    raise
                raise error from exc
            self._fallbacks.inc()
            answer = fallback(error)
            return await answer if inspect.isawaitable(answer) else answer
        finally:
            self._duration.observe(max(0.0, self._clock.monotonic() - started))
        self._calls["success"].inc()
        return result

    def protect(
        self, *, idempotent: bool = False, fallback: Fallback[T] | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorator form of :meth:`call`, keeping the function's signature."""

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            @wraps(fn)
            async def protected(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self.call(
                    fn, *args, idempotent=idempotent, fallback=fallback, **kwargs
                )

            return protected

        return decorate

    async def _attempt(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        return await self.breaker.run(self._bounded(fn, args, kwargs))

    async def _bounded(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        await self.bulkhead.acquire()
        try:
            timeout = asyncio.timeout(self.config.timeout_seconds)
            try:
                async with timeout:
                    return await fn(*args, **kwargs)
            except TimeoutError as exc:
                if timeout.expired():
                    raise DependencyTimeout(
                        f"{self.name}: no answer within {self.config.timeout_seconds} s",
                        retry_after=self.config.failure_retry_after,
                        dependency=self.name,
                    ) from exc
                raise
        finally:
            self.bulkhead.release()

    def _surface(self, exc: Exception) -> DependencyUnavailable | None:
        """The error to give the caller (and count), or None for the caller's own errors."""
        if isinstance(exc, BreakerOpen):
            self._rejections["breaker_open"].inc()
            self._calls["rejected"].inc()
            return exc
        if isinstance(exc, BulkheadFull):
            self._rejections["bulkhead_full"].inc()
            self._calls["rejected"].inc()
            return exc
        if isinstance(exc, DependencyTimeout):
            self._calls["timeout"].inc()
            return exc
        if not self.breaker.counts_as_failure(exc):
            return None
        self._calls["failure"].inc()
        if isinstance(exc, DependencyUnavailable):
            return exc  # already says what it is and when to come back
        return DependencyFailed(
            f"{self.name}: {type(exc).__name__}",
            retry_after=self.config.failure_retry_after,
            dependency=self.name,
        )


class Dependencies:
    """The app's dependencies by name: ``deps.storage.call(...)`` or ``deps["storage"]``."""

    def __init__(
        self,
        configs: Iterable[DependencyConfig],
        *,
        clock: Clock = SYSTEM_CLOCK,
        store: BreakerStateStore | None = None,
        metrics: ResilienceMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        listeners: tuple[BreakerListener, ...] = (),
        registry: BreakerRegistry | None = None,
    ) -> None:
        self._by_name: dict[str, Dependency] = {}
        self.registry = (
            registry
            if registry is not None
            else BreakerRegistry(store=store, clock=clock, metrics=metrics)
        )
        """Where the operator's levers (``force_open``, ``reset``, …) reach these breakers."""
        for config in configs:
            if config.name in self._by_name:
                raise ValueError(f"dependency {config.name!r} configured twice")
            dependency = Dependency(
                config, clock=clock, store=store, metrics=metrics, sleep=sleep, listeners=listeners
            )
            self.registry.add(dependency.breaker)
            self._by_name[config.name] = dependency

    async def start(self) -> None:
        """Announce every breaker of the registry in the shared store (bounded per breaker)."""
        for breaker in self.registry:
            await breaker.sync()

    async def stop(self) -> None:
        """Close the shared breaker store, if there is one."""
        if self.registry.store is not None:
            await self.registry.store.aclose()

    def __getattr__(self, name: str) -> Dependency:
        by_name: dict[str, Dependency] = self.__dict__["_by_name"]
        try:
            return by_name[name]
        except KeyError:
            raise AttributeError(f"no dependency named {name!r}") from None

    def __getitem__(self, name: str) -> Dependency:
        return self._by_name[name]

    def __iter__(self) -> Iterator[Dependency]:
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return {name: dep.breaker for name, dep in self._by_name.items()}

"""Retries: tenacity's machinery, Keel's policy.

The policy, in the order it is checked after a failed attempt:

1. only *idempotent* calls are retried — a write is retried only when the caller says it
   carries an idempotency key, because a write that timed out may well have happened;
2. only exceptions in ``retry_on``, and never Keel's own rejections (an open breaker or a
   full bulkhead will not get better in 100 ms, and retrying them multiplies load);
3. at most ``max_attempts`` attempts, and no retry whose backoff would end past
   ``max_total_seconds`` on Keel's clock;
4. a ``Retry-After`` hint on the exception (any ``retry_after`` attribute) replaces the
   jittered backoff; a hint longer than ``max_retry_after`` ends the retries;
5. the dependency's :class:`RetryBudget` must have a token — so when a dependency fails
   for everyone, retries add at most ``budget_ratio`` to its load instead of multiplying
   it by ``max_attempts`` (gRPC's retry throttling, Envoy's and Finagle's budgets).

When any check says no, the last attempt's own exception is raised, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from keel.clock import SYSTEM_CLOCK, Clock
from keel.resilience._config import RetryConfig
from keel.resilience._errors import BreakerOpen, BulkheadFull, StateStoreUnavailable

T = TypeVar("T")

_NEVER_RETRIED: tuple[type[BaseException], ...] = (BreakerOpen, BulkheadFull, StateStoreUnavailable)

_testing = False


def set_testing(enabled: bool = True) -> None:
    """Remove every backoff delay (stamina's ``set_testing``): retries still happen, at once.

    Process-wide on purpose, like stamina's: a test suite flips it once in a fixture.
    """
    global _testing  # noqa: PLW0603 - a deliberate process-wide test switch
    _testing = enabled


def is_testing() -> bool:
    return _testing


@runtime_checkable
class RetryAfterHint(Protocol):
    """An exception that knows when the other side wants to be asked again."""

    retry_after: float | None


def retry_after_hint(error: BaseException) -> float | None:
    """The seconds an exception's ``retry_after`` asks for, if it carries a usable one."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


class RetryBudget:
    """A token bucket shared by every call to one dependency.

    Each call deposits ``ratio`` of a token, each retry spends a whole one, and the bucket
    also fills by ``min_per_second`` so a dependency with little traffic can still retry.
    The cap keeps a quiet hour from banking a storm. Time is an argument.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        min_per_second: float = 1.0,
        max_tokens: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.max_tokens = max_tokens
        self._clock = clock
        self._tokens = max_tokens
        self._updated: float | None = None

    @classmethod
    def from_config(cls, config: RetryConfig, *, clock: Clock = SYSTEM_CLOCK) -> RetryBudget:
        return cls(
            config.budget_ratio,
            min_per_second=config.budget_min_per_second,
            max_tokens=config.budget_max_tokens,
            clock=clock,
        )

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self._tokens = min(
                self.max_tokens, self._tokens + (now - self._updated) * self.min_per_second
            )
        if self._updated is None or now > self._updated:
            self._updated = now

    def tokens(self, now: float | None = None) -> float:
        self._refill(self._clock.monotonic() if now is None else now)
        return self._tokens

    def deposit(self, now: float | None = None) -> None:
        """Record one call (not a retry)."""
        self._refill(self._clock.monotonic() if now is None else now)
        self._tokens = min(self.max_tokens, self._tokens + self.ratio)

    def try_spend(self, now: float | None = None) -> bool:
        """Take one token for a retry; False (and nothing taken) if there is none."""
        self._refill(self._clock.monotonic() if now is None else now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class _Wait:
    """The Retry-After hint if there is one, else capped exponential full jitter."""

    def __init__(self, config: RetryConfig) -> None:
        self._jitter = wait_random_exponential(
            multiplier=config.initial_backoff, max=config.max_backoff
        )

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        hint = retry_after_hint(error) if error is not None else None
        if _testing:
            return 0.0
        if hint is not None:
            return hint
        return float(self._jitter(state))


class _Stop:
    """Checks 3–5 of the module docstring; the budget is asked last, so a token is only
    spent on a retry that will really happen."""

    def __init__(
        self,
        config: RetryConfig,
        budget: RetryBudget,
        clock: Clock,
        deadline: float,
        on_budget_denied: Callable[[], None] | None,
    ) -> None:
        self._config = config
        self._budget = budget
        self._clock = clock
        self._deadline = deadline
        self._on_budget_denied = on_budget_denied

    def __call__(self, state: RetryCallState) -> bool:
        config = self._config
        if state.attempt_number >= config.max_attempts:
            return True
        now = self._clock.monotonic()
        if now + state.upcoming_sleep >= self._deadline:
            return True
        error = state.outcome.exception() if state.outcome is not None else None
        hint = retry_after_hint(error) if error is not None else None
        if hint is not None and hint > config.max_retry_after:
            return True
        if not self._budget.try_spend(now):
            if self._on_budget_denied is not None:
                self._on_budget_denied()
            return True
        return False


class RetryPolicy:
    """Runs an attempt function under the policy above (one instance per dependency)."""

    def __init__(
        self,
        config: RetryConfig,
        *,
        budget: RetryBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[], None] | None = None,
        on_budget_denied: Callable[[], None] | None = None,
        also_require: Callable[[BaseException], bool] | None = None,
    ) -> None:
        """``also_require`` narrows ``retry_on`` further; a ``Dependency`` passes its
        breaker's classification, so only what counts as the dependency failing is retried
        (a 404 or a validation error is an answer, not a failure)."""
        self.config = config
        self.budget = budget if budget is not None else RetryBudget.from_config(config, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._wait = _Wait(config)
        self._on_retry = on_retry
        self._on_budget_denied = on_budget_denied
        self._retry_on = config.retry_on
        self._also_require = also_require

    def is_retryable(self, error: BaseException) -> bool:
        return (
            isinstance(error, Exception)
            and isinstance(error, self._retry_on)
            and not isinstance(error, _NEVER_RETRIED)
            and (self._also_require is None or self._also_require(error))
        )

    async def run(self, attempt: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """Call ``attempt`` until it succeeds or the policy says stop; deposit in the budget.

        ``idempotent=False`` means exactly one attempt, whatever the configuration says.
        """
        self.budget.deposit()
        if not idempotent or self.config.max_attempts == 1:
            return await attempt()
        # The first attempt runs without tenacity: building and driving its machinery
        # costs more than a local disk read (mostly ``inspect`` checks),
        # and almost every call succeeds first time. Only a retryable failure enters
        # tenacity, whose first "attempt" replays that failure without calling again,
        # so its stop, wait and budget logic see exactly what they would have seen.
        started = self._clock.monotonic()
        try:
            return await attempt()
        except Exception as error:
            if not self.is_retryable(error):
                raise
            first_failure: Exception | None = error
        on_retry = self._on_retry
        retrying = AsyncRetrying(
            stop=_Stop(
                self.config,
                self.budget,
                self._clock,
                started + self.config.max_total_seconds,
                self._on_budget_denied,
            ),
            wait=self._wait,
            retry=retry_if_exception(self.is_retryable),
            sleep=self._sleep,
            reraise=True,
            before_sleep=(lambda _state: on_retry()) if on_retry is not None else None,
        )

        async def one_attempt() -> T:
            # tenacity awaits only what *is* a coroutine function; ``attempt`` may be a
            # lambda returning an awaitable, so give it one it recognises.
            nonlocal first_failure
            if first_failure is not None:
                replay, first_failure = first_failure, None
                raise replay
            return await attempt()

        return await retrying(one_attempt)

"""Configuration of the resilience layer as pydantic models, one per dependency.

Numbers come from settings (so they validate like settings do); exception classes and
result predicates are code, set where the dependency is wired. Defaults are deliberately
conservative for an API that calls a handful of internal dependencies: trip on half the
calls failing (or all of them being slow) among the last 100, after at least 20.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WindowType(StrEnum):
    COUNT = "count"
    """The last ``window_size`` calls."""
    TIME = "time"
    """The calls of the last ``window_size`` seconds."""


class BreakerConfig(BaseModel):
    """A circuit breaker's policy (names follow resilience4j's where they mean the same)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    failure_rate_threshold: float = Field(50.0, gt=0, le=100)
    """Percent of failed calls in the window at or above which the breaker opens."""
    slow_call_rate_threshold: float = Field(100.0, gt=0, le=100)
    """Percent of slow calls in the window at or above which the breaker opens."""
    slow_call_duration_threshold: float = Field(2.0, gt=0)
    """Seconds beyond which a call counts as slow. Keep it below the dependency timeout:
    a call cut by the timeout is a failure, so a higher threshold never sees a slow call."""
    window_type: WindowType = WindowType.COUNT
    window_size: int = Field(100, ge=1, le=100_000)
    """Calls (COUNT) or seconds (TIME) the window covers."""
    minimum_number_of_calls: int = Field(20, ge=1)
    """No decision is taken on fewer calls than this (clamped to a COUNT window's size)."""
    wait_duration_in_open_state: float = Field(30.0, gt=0)
    """Seconds to reject calls before letting probes through, after a trip from CLOSED."""
    max_wait_duration_in_open_state: float | None = Field(None, gt=0)
    """The cap of the wait in OPEN as failed probe rounds lengthen it (resilience4j's
    exponential ``waitIntervalFunctionInOpenState``). None: the wait never grows.
    Never below ``wait_duration_in_open_state``."""
    wait_duration_multiplier: float = Field(2.0, ge=1.0, le=10.0)
    """Each round of probes that fails multiplies the wait in OPEN by this, up to the cap.

    Short first waits find a dependency that is back within seconds of its return; the
    growth keeps a dependency that stays down from being probed every second."""
    permitted_number_of_calls_in_half_open_state: int = Field(5, ge=1)
    """Probe calls allowed in HALF_OPEN; their outcomes alone decide CLOSED or OPEN."""
    record_exceptions: tuple[type[BaseException], ...] = (Exception,)
    """Exceptions that count as failures. Any other exception counts as a success (the
    dependency answered; the caller's error is not the dependency's)."""
    ignore_exceptions: tuple[type[BaseException], ...] = ()
    """Exceptions that count as neither; they win over ``record_exceptions``. Exceptions
    that are not ``Exception`` (cancellation, interrupts) are always ignored."""
    record_result: Callable[[Any], bool] | None = None
    """A predicate marking a *returned* value as a failure (an error-shaped response)."""
    sync_interval: float = Field(1.0, gt=0, le=60)
    """Seconds a breaker trusts its cached view of the shared state store."""
    initial_state: Literal["closed", "disabled", "metrics_only", "forced_open"] = "closed"
    """The state a breaker starts in when the store has nothing to say (operator states
    too, so a dependency can ship DISABLED or METRICS_ONLY while it is being tuned)."""

    def next_wait_in_open_state(self, current: float) -> float:
        """The wait after a failed round of probes that followed a wait of ``current``."""
        cap = max(
            self.wait_duration_in_open_state,
            self.max_wait_duration_in_open_state or self.wait_duration_in_open_state,
        )
        return min(cap, current * self.wait_duration_multiplier)

    @property
    def effective_minimum_calls(self) -> int:
        if self.window_type is WindowType.COUNT:
            return min(self.minimum_number_of_calls, self.window_size)
        return self.minimum_number_of_calls


class RetryConfig(BaseModel):
    """Retries with capped exponential backoff, full jitter and a retry budget."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    max_attempts: int = Field(3, ge=1, le=20)
    """Attempts in all, the first included; 1 turns retries off."""
    max_total_seconds: float = Field(10.0, gt=0)
    """No retry starts if its backoff would end after this many seconds since the first
    attempt started (tenacity's ``stop_before_delay``, on Keel's clock)."""
    initial_backoff: float = Field(0.1, ge=0)
    max_backoff: float = Field(2.0, ge=0)
    """Full jitter: the n-th backoff is uniform in ``[0, min(max, initial * 2**n)]``."""
    max_retry_after: float = Field(30.0, ge=0)
    """The longest ``Retry-After`` hint honoured; a longer one ends the retries."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    """Exceptions worth another attempt (Keel's own rejections never are)."""
    budget_ratio: float = Field(0.2, ge=0, le=1)
    """Tokens each call deposits; one retry spends a whole token, so retries stay under
    this share of calls (gRPC's ``token_ratio``, Finagle's ``percentCanRetry``)."""
    budget_min_per_second: float = Field(1.0, ge=0)
    """Tokens added per second regardless of traffic, so a quiet dependency can retry."""
    budget_max_tokens: float = Field(10.0, ge=1)
    """Cap on saved tokens: a long quiet spell never banks a retry storm."""

    @model_validator(mode="after")
    def _backoff_is_ordered(self) -> RetryConfig:
        if self.initial_backoff > self.max_backoff:
            raise ValueError("initial_backoff must not exceed max_backoff")
        return self


class BulkheadConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent_calls: int = Field(20, ge=1)
    max_wait_seconds: float = Field(0.05, ge=0)
    """How long a call may queue for a slot; 0 rejects at once when full."""
    retry_after: int = Field(1, ge=1)
    """The ``Retry-After`` a rejected caller is given."""


class DependencyConfig(BaseModel):
    """Everything about one external dependency ("storage", "redis", "webhooks", …)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")
    timeout_seconds: float = Field(5.0, gt=0)
    """Per attempt; the retries' total is bounded by ``retry.max_total_seconds``."""
    failure_retry_after: int = Field(1, ge=1)
    """The ``Retry-After`` given when the dependency failed (breaker still closed)."""
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    bulkhead: BulkheadConfig = BulkheadConfig()

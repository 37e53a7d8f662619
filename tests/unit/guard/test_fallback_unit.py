"""FallbackBackend with a scripted primary and a manual clock: no network, no sleeps."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from keel.guard.ratelimit.backend import QuotaCheck, RateCheck, SlotClaim
from keel.guard.ratelimit.errors import LimiterUnavailable
from keel.guard.ratelimit.fallback import Cooldown, CooldownState, FallbackBackend, FallbackMetrics
from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.quota import QuotaWindow
from keel.testing import ManualClock, capture_logs

NOW = 1_800_000_000.0
RATE = Rate(limit=60, period=60, burst=10)


class FlakyBackend(MemoryBackend):
    """A memory backend that fails on demand, counting the calls that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.down:
            raise LimiterUnavailable("redis: ConnectionError: cut")

    async def gcra(self, key: str, rate: Rate, now: float, n: int = 1):  # type: ignore[no-untyped-def]
        self._maybe_fail()
        return await super().gcra(key, rate, now, n)

    async def admit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail()
        return await super().admit(*args, **kwargs)

    async def slot_acquire(self, key: str, limit: int, lease: float, now: float):  # type: ignore[no-untyped-def]
        self._maybe_fail()
        return await super().slot_acquire(key, limit, lease, now)

    async def quota_consume(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail()
        return await super().quota_consume(*args, **kwargs)


def make(clock: ManualClock, registry: CollectorRegistry) -> tuple[FallbackBackend, FlakyBackend]:
    primary = FlakyBackend()
    fallback = FallbackBackend(
        primary, instances=2, cooldown=5.0, clock=clock, metrics=FallbackMetrics(registry)
    )
    return fallback, primary


def fallback_count(registry: CollectorRegistry, operation: str = "gcra") -> float:
    value = registry.get_sample_value(
        "keel_ratelimit_fallback_decisions_total", {"operation": operation}
    )
    return value or 0.0


async def test_failure_switches_to_a_local_share_and_logs_once() -> None:
    clock, registry = ManualClock(), CollectorRegistry()
    fallback, primary = make(clock, registry)
    assert (await fallback.gcra("k", RATE, NOW)).allowed
    assert not fallback.degraded

    primary.down = True
    with capture_logs() as logs:
        decisions = [await fallback.gcra("k", RATE, NOW) for _ in range(8)]
    # Half the burst each for two instances.
    assert [d.allowed for d in decisions].count(True) == 5
    assert fallback.degraded
    assert [entry["event"] for entry in logs] == ["ratelimit.fallback.engaged"]
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["instances"] == 2
    assert fallback_count(registry) == 8
    # The cooldown kept every call after the first failure away from the primary.
    assert primary.calls == 2


async def test_after_the_cooldown_a_probe_restores_the_primary() -> None:
    clock, registry = ManualClock(), CollectorRegistry()
    fallback, primary = make(clock, registry)
    primary.down = True
    await fallback.gcra("k", RATE, NOW)
    primary.down = False
    clock.advance(4.9)
    await fallback.gcra("k", RATE, NOW)
    assert fallback.degraded
    assert primary.calls == 1
    clock.advance(0.2)
    with capture_logs() as logs:
        await fallback.gcra("k", RATE, NOW)
        await fallback.gcra("k", RATE, NOW)
    assert not fallback.degraded
    assert [entry["event"] for entry in logs] == ["ratelimit.fallback.recovered"]
    assert primary.calls == 3


async def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = ManualClock()
    fallback, primary = make(clock, CollectorRegistry())
    primary.down = True
    await fallback.gcra("k", RATE, NOW)
    clock.advance(5)
    with capture_logs() as logs:
        await fallback.gcra("k", RATE, NOW)
    assert logs == []  # still degraded: no second "engaged"
    clock.advance(4)
    await fallback.gcra("k", RATE, NOW)
    assert primary.calls == 2


async def test_local_slots_are_released_locally() -> None:
    fallback, primary = make(ManualClock(), CollectorRegistry())
    primary.down = True
    first = await fallback.slot_acquire("s", 4, 30, NOW)
    second = await fallback.slot_acquire("s", 4, 30, NOW)
    third = await fallback.slot_acquire("s", 4, 30, NOW)
    assert (first.acquired, second.acquired, third.acquired) == (True, True, False)
    assert first.slot_id is not None
    assert first.slot_id.startswith("local:")
    await fallback.slot_release("s", first.slot_id)
    assert (await fallback.slot_acquire("s", 4, 30, NOW)).acquired


async def test_local_quota_share() -> None:
    fallback, primary = make(ManualClock(), CollectorRegistry())
    primary.down = True
    window = QuotaWindow("day")
    results = [(await fallback.quota_consume("q", 10, window, NOW)).allowed for _ in range(7)]
    assert results.count(True) == 5


async def test_a_whole_admission_goes_local_with_a_share_of_every_limit() -> None:
    registry = CollectorRegistry()
    fallback, primary = make(ManualClock(), registry)
    assert (await fallback.admit([RateCheck("k", RATE)], [], [], NOW)).allowed
    primary.down = True
    rates = [RateCheck("k", RATE), RateCheck("org", Rate(60, 60, 4))]
    quotas = [QuotaCheck("q", 10, QuotaWindow("day"))]
    claims = [SlotClaim("s", 6, 30)]
    outcomes = [await fallback.admit(rates, quotas, claims, NOW) for _ in range(4)]
    # Two instances: the org's burst of 4 gives 2 locally; the refusals spent nothing.
    assert [a.allowed for a in outcomes] == [True, True, False, False]
    assert fallback_count(registry, "admit") == 4
    assert (await fallback.local.gcra("k", RATE.scaled(2), NOW, 0)).remaining == 3
    assert outcomes[0].quotas[0].limit == 5
    slot_id = outcomes[0].slots[0].slot_id
    assert slot_id is not None
    assert slot_id.startswith("local:")
    await fallback.slot_release("s", slot_id)
    assert len(fallback.local._slots["s"]) == 1


class CountingBreaker:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.open = False

    def allow(self) -> bool:
        return not self.open

    def record_success(self) -> None:
        self.events.append("success")

    def record_failure(self) -> None:
        self.events.append("failure")
        self.open = True


async def test_any_breaker_with_the_three_methods_can_be_passed_in() -> None:
    primary = FlakyBackend()
    breaker = CountingBreaker()
    fallback = FallbackBackend(primary, breaker=breaker, metrics=FallbackMetrics(None))
    await fallback.gcra("k", RATE, NOW)
    primary.down = True
    await fallback.gcra("k", RATE, NOW)
    await fallback.gcra("k", RATE, NOW)
    assert breaker.events == ["success", "failure"]


def test_cooldown_state_machine() -> None:
    clock = ManualClock()
    cooldown = Cooldown(2.0, clock=clock)
    assert cooldown.allow()
    cooldown.record_failure()
    assert cooldown.state is CooldownState.OPEN
    assert not cooldown.allow()
    clock.advance(2.0)
    assert cooldown.allow()  # the probe
    assert not cooldown.allow()  # only one probe per cooldown
    cooldown.record_success()
    assert cooldown.state is CooldownState.CLOSED
    assert cooldown.allow()


async def test_a_breaker_opened_by_another_redis_user_still_engages_the_fallback() -> None:
    """The Redis breaker is shared: the state store may open it before the limiter fails."""
    primary = FlakyBackend()
    breaker = CountingBreaker()
    breaker.open = True
    fallback = FallbackBackend(primary, breaker=breaker, metrics=FallbackMetrics(None))
    with capture_logs() as logs:
        assert (await fallback.gcra("k", RATE, NOW)).allowed
        await fallback.gcra("k", RATE, NOW)
    assert primary.calls == 0
    assert fallback.degraded  # so /ready says warn
    assert [entry["event"] for entry in logs] == ["ratelimit.fallback.engaged"]
    breaker.open = False
    with capture_logs() as logs:
        await fallback.gcra("k", RATE, NOW)
    assert not fallback.degraded
    assert [entry["event"] for entry in logs] == ["ratelimit.fallback.recovered"]


async def test_while_redis_is_down_quota_reservations_hold_locally_and_come_back_locally() -> None:
    fallback, primary = make(ManualClock(), CollectorRegistry())
    primary.down = True
    window = QuotaWindow("day")
    checks = [QuotaCheck("q", 10, window)]
    outcomes = await asyncio.gather(*(fallback.admit([], checks, [], NOW) for _ in range(8)))
    # Two instances: this one's share of 10 is 5, reserved at the check as on Redis.
    assert sum(a.allowed for a in outcomes) == 5
    assert (await fallback.local.quota_check("q", 5, window, NOW)).used == 5
    await fallback.quota_refund("q", window, NOW)  # a failed request, still degraded
    assert (await fallback.local.quota_check("q", 5, window, NOW)).used == 4
    assert (await fallback.admit([], checks, [], NOW)).allowed
    assert not (await fallback.admit([], checks, [], NOW)).allowed

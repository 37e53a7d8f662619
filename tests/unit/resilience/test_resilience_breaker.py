"""The circuit breaker's state machine, as tables over a manual clock."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from keel.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    IllegalTransition,
    MemoryBreakerStateStore,
    ResilienceMetrics,
    Transition,
    TransitionReason,
    WindowType,
)
from keel.testing import ManualClock, capture_logs

S = BreakerState


class Boom(Exception):
    pass


class NotMine(Exception):
    pass


def make(
    clock: ManualClock, registry: CollectorRegistry | None = None, **overrides: object
) -> CircuitBreaker:
    options: dict[str, object] = {
        "window_size": 10,
        "minimum_number_of_calls": 4,
        "failure_rate_threshold": 50.0,
        "slow_call_duration_threshold": 1.0,
        "slow_call_rate_threshold": 50.0,
        "wait_duration_in_open_state": 30.0,
        "permitted_number_of_calls_in_half_open_state": 2,
    }
    options.update(overrides)
    return CircuitBreaker(
        "dep",
        BreakerConfig.model_validate(options),
        clock=clock,
        metrics=ResilienceMetrics(registry or CollectorRegistry()),
    )


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise Boom


def slow(clock: ManualClock, seconds: float) -> Callable[[], object]:
    async def call() -> str:
        clock.advance(seconds)
        return "slow"

    return call


async def outcomes(breaker: CircuitBreaker, pattern: str, clock: ManualClock) -> None:
    """Run one call per letter: s = success, f = failure, w = slow success."""
    for letter in pattern:
        if letter == "s":
            await breaker.call(ok)
        elif letter == "f":
            with pytest.raises(Boom):
                await breaker.call(boom)
        else:
            await breaker.call(slow(clock, 2.0))  # type: ignore[arg-type]


async def trip(breaker: CircuitBreaker, clock: ManualClock) -> None:
    await outcomes(breaker, "ffff", clock)
    assert breaker.state is S.OPEN


# --- the table ------------------------------------------------------------------------


def test_transition_table_holds_exactly_the_legal_pairs() -> None:
    automatic = {
        (S.CLOSED, S.OPEN),
        (S.OPEN, S.HALF_OPEN),
        (S.HALF_OPEN, S.CLOSED),
        (S.HALF_OPEN, S.OPEN),
    }
    operator_targets = {S.CLOSED, S.FORCED_OPEN, S.DISABLED, S.METRICS_ONLY}
    expected = (
        automatic
        | {(a, b) for a in S for b in operator_targets if a is not b}
        | {(S.CLOSED, S.CLOSED)}
    )
    assert {t.value for t in Transition} == expected
    for a in S:
        for b in S:
            if (a, b) in expected:
                assert Transition.between(a, b).value == (a, b)
            else:
                with pytest.raises(IllegalTransition):
                    Transition.between(a, b)


@pytest.mark.parametrize(
    ("setup", "target", "reason"),
    [
        ("closed", S.FORCED_OPEN, TransitionReason.OPERATOR),
        ("closed", S.DISABLED, TransitionReason.OPERATOR),
        ("closed", S.METRICS_ONLY, TransitionReason.OPERATOR),
        ("closed", S.CLOSED, TransitionReason.RESET),
        ("open", S.CLOSED, TransitionReason.OPERATOR),
        ("open", S.FORCED_OPEN, TransitionReason.OPERATOR),
        ("open", S.DISABLED, TransitionReason.OPERATOR),
        ("open", S.METRICS_ONLY, TransitionReason.OPERATOR),
        ("half_open", S.FORCED_OPEN, TransitionReason.OPERATOR),
        ("half_open", S.DISABLED, TransitionReason.OPERATOR),
        ("half_open", S.METRICS_ONLY, TransitionReason.OPERATOR),
        ("forced_open", S.CLOSED, TransitionReason.OPERATOR),
        ("forced_open", S.DISABLED, TransitionReason.OPERATOR),
        ("forced_open", S.METRICS_ONLY, TransitionReason.OPERATOR),
        ("disabled", S.CLOSED, TransitionReason.OPERATOR),
        ("disabled", S.FORCED_OPEN, TransitionReason.OPERATOR),
        ("disabled", S.METRICS_ONLY, TransitionReason.OPERATOR),
        ("metrics_only", S.CLOSED, TransitionReason.OPERATOR),
        ("metrics_only", S.FORCED_OPEN, TransitionReason.OPERATOR),
        ("metrics_only", S.DISABLED, TransitionReason.OPERATOR),
    ],
)
async def test_operator_transitions_emit_one_typed_event_each(
    setup: str, target: BreakerState, reason: TransitionReason
) -> None:
    clock = ManualClock()
    breaker = make(clock)
    if setup == "open":
        await trip(breaker, clock)
    elif setup == "half_open":
        await trip(breaker, clock)
        clock.advance(30)
        breaker.acquire_permission()
    elif setup != "closed":
        breaker.transition_to(S(setup), TransitionReason.OPERATOR)
    await breaker.flush()
    events: list[BreakerTransition] = []
    breaker.add_listener(events.append)
    origin = breaker.state
    clock.advance(1)

    assert breaker.transition_to(target, reason) is True
    await breaker.flush()

    assert breaker.state is target
    assert len(events) == 1
    assert events[0].transition is Transition.between(origin, target)
    assert events[0].reason is reason
    assert events[0].at == clock.now()


def test_operator_transition_to_the_current_state_is_a_no_op() -> None:
    breaker = make(ManualClock())
    assert breaker.transition_to(S.CLOSED, TransitionReason.OPERATOR) is False


# --- CLOSED → OPEN: rates over windows, after the minimum ------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("fff", S.CLOSED),  # below minimum_number_of_calls (4)
        ("ffff", S.OPEN),  # 100 % of 4
        ("sssf", S.CLOSED),  # 25 %
        ("ssff", S.OPEN),  # 50 %: at the threshold trips
        ("sssssfffs", S.CLOSED),  # 3/9 = 33 %
        ("sssssffffs", S.CLOSED),  # 4/10 = 40 %
        ("sssssfffff", S.OPEN),  # 5/10 = 50 %
        ("www", S.CLOSED),  # slow, below minimum
        ("ssww", S.OPEN),  # 50 % slow
        ("sssw", S.CLOSED),  # 25 % slow
    ],
)
async def test_count_window_trips_on_failure_or_slow_rate_after_minimum(
    pattern: str, expected: BreakerState
) -> None:
    clock = ManualClock()
    breaker = make(clock)
    await outcomes(breaker, pattern, clock)
    assert breaker.state is expected


async def test_count_window_forgets_calls_older_than_its_size() -> None:
    clock = ManualClock()
    breaker = make(clock, window_size=4)
    await outcomes(breaker, "f" + "s" * 3, clock)  # 25 %
    await outcomes(breaker, "f", clock)  # evicts the first f: still 1/4
    assert breaker.state is S.CLOSED
    assert breaker.snapshot().failed == 1
    await outcomes(breaker, "f", clock)  # 2/4
    assert breaker.state is S.OPEN


async def test_minimum_calls_is_clamped_to_a_count_window() -> None:
    clock = ManualClock()
    breaker = make(clock, window_size=3, minimum_number_of_calls=50)
    await outcomes(breaker, "fff", clock)
    assert breaker.state is S.OPEN


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (seconds to advance before the call, outcome)
        ([(0, "f"), (0, "f"), (0, "s"), (0, "s")], S.OPEN),  # 2/4 within one second
        ([(0, "f"), (0, "f"), (5, "s"), (0, "s")], S.OPEN),  # 5 s apart: same 10 s window
        ([(0, "f"), (0, "f"), (10, "s"), (0, "s")], S.CLOSED),  # failures aged out
        ([(0, "s"), (0, "s"), (0, "s"), (9.5, "f"), (0, "f")], S.CLOSED),  # 2/5
        ([(0, "s"), (0, "s"), (0, "s"), (10, "f"), (0, "f"), (0, "s"), (0, "s")], S.OPEN),
    ],
)
async def test_time_window_counts_only_the_last_seconds(
    steps: list[tuple[float, str]], expected: BreakerState
) -> None:
    clock = ManualClock()
    breaker = make(clock, window_type=WindowType.TIME, window_size=10)
    for advance, letter in steps:
        clock.advance(advance)
        await outcomes(breaker, letter, clock)
    assert breaker.state is expected


# --- OPEN → HALF_OPEN → CLOSED / OPEN --------------------------------------------------


@pytest.mark.parametrize(
    ("waited", "permitted"), [(0, False), (29.9, False), (30, True), (300, True)]
)
async def test_open_rejects_until_the_wait_has_elapsed(waited: float, permitted: bool) -> None:
    clock = ManualClock()
    breaker = make(clock)
    await trip(breaker, clock)
    clock.advance(waited)
    if permitted:
        assert await breaker.call(ok) == "ok"
        assert breaker.state is S.HALF_OPEN
    else:
        with pytest.raises(BreakerOpen) as rejected:
            await breaker.call(ok)
        assert rejected.value.retry_after == max(1, int(-(-(30 - waited) // 1)))
        assert rejected.value.status == 503
        assert rejected.value.headers["Retry-After"] == str(rejected.value.retry_after)
        assert breaker.state is S.OPEN


@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        ("ss", S.CLOSED),
        ("sf", S.OPEN),
        ("fs", S.OPEN),
        ("ww", S.OPEN),
        ("sw", S.OPEN),
        ("ff", S.OPEN),
    ],
)
async def test_half_open_probes_decide(probes: str, expected: BreakerState) -> None:
    clock = ManualClock()
    breaker = make(clock)  # 2 probes, 50 % thresholds
    await trip(breaker, clock)
    clock.advance(30)
    await outcomes(breaker, probes[0], clock)
    assert breaker.state is S.HALF_OPEN
    await outcomes(breaker, probes[1], clock)
    assert breaker.state is expected
    if expected is S.CLOSED:
        assert breaker.snapshot().calls == 0  # a fresh window after closing


async def test_half_open_rejects_concurrent_probes_beyond_the_limit() -> None:
    clock = ManualClock()
    breaker = make(clock, permitted_number_of_calls_in_half_open_state=3)
    await trip(breaker, clock)
    clock.advance(30)
    release = asyncio.Event()
    started = 0

    async def probe() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "ok"

    async with asyncio.timeout(5):
        tasks = [asyncio.create_task(breaker.call(probe)) for _ in range(10)]
        while started < 3 and not all(t.done() for t in tasks):
            await asyncio.sleep(0)
        rejected = [t for t in tasks if t.done()]
        assert len(rejected) == 7
        assert all(isinstance(t.exception(), BreakerOpen) for t in rejected)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 3
    assert breaker.state is S.CLOSED


async def test_an_ignored_probe_gives_its_permit_back() -> None:
    clock = ManualClock()
    breaker = make(
        clock, ignore_exceptions=(NotMine,), permitted_number_of_calls_in_half_open_state=1
    )
    await trip(breaker, clock)
    clock.advance(30)

    async def not_mine() -> str:
        raise NotMine

    with pytest.raises(NotMine):
        await breaker.call(not_mine)
    assert breaker.state is S.HALF_OPEN
    assert await breaker.call(ok) == "ok"  # the permit came back
    assert breaker.state is S.CLOSED


async def test_outcome_of_a_call_admitted_before_the_trip_stays_out_of_the_probes() -> None:
    clock = ManualClock()
    breaker = make(clock, permitted_number_of_calls_in_half_open_state=1)
    early = breaker.acquire_permission()  # admitted while CLOSED
    await trip(breaker, clock)
    clock.advance(30)
    probe = breaker.acquire_permission()
    breaker.on_error(early, Boom(), 0.0)  # stale: must not reopen
    assert breaker.state is S.HALF_OPEN
    breaker.on_success(probe, 0.0)
    assert breaker.state is S.CLOSED
    assert breaker.stats().calls["failure"] == 5  # still counted in metrics


# --- operator states -----------------------------------------------------------------


async def test_forced_open_rejects_everything_whatever_the_time() -> None:
    clock = ManualClock()
    breaker = make(clock)
    breaker.transition_to(S.FORCED_OPEN, TransitionReason.OPERATOR)
    for _ in range(3):
        clock.advance(1000)
        with pytest.raises(BreakerOpen):
            await breaker.call(ok)
    assert breaker.state is S.FORCED_OPEN
    assert breaker.stats().not_permitted == 3


async def test_disabled_permits_everything_and_records_nothing() -> None:
    clock = ManualClock()
    breaker = make(clock, initial_state="disabled")
    await outcomes(breaker, "f" * 20, clock)
    assert breaker.state is S.DISABLED
    stats = breaker.stats()
    assert stats.calls == {"success": 0, "failure": 0, "slow": 0, "ignored": 0}


async def test_metrics_only_records_but_never_trips() -> None:
    clock = ManualClock()
    breaker = make(clock, initial_state="metrics_only")
    await outcomes(breaker, "f" * 10 + "w" * 2, clock)
    assert breaker.state is S.METRICS_ONLY
    assert breaker.snapshot().failure_rate == 80.0
    assert breaker.stats().calls["failure"] == 10


async def test_reset_clears_the_window_even_when_closed() -> None:
    clock = ManualClock()
    breaker = make(clock)
    await outcomes(breaker, "fff", clock)
    assert breaker.transition_to(S.CLOSED, TransitionReason.RESET) is True
    assert breaker.snapshot().calls == 0
    await outcomes(breaker, "f", clock)
    assert breaker.state is S.CLOSED


# --- classification --------------------------------------------------------------------


class Recorded(Exception):
    pass


class IgnoredSub(Recorded):
    pass


@pytest.mark.parametrize(
    ("error", "counted_as"),
    [
        (Recorded(), "failure"),
        (IgnoredSub(), "ignored"),  # ignore wins over record
        (ValueError(), "success"),  # neither listed: the dependency did answer
        (asyncio.CancelledError(), "ignored"),  # not an Exception
    ],
)
async def test_exceptions_are_classified_by_record_and_ignore_lists(
    error: BaseException, counted_as: str
) -> None:
    breaker = make(ManualClock(), record_exceptions=(Recorded,), ignore_exceptions=(IgnoredSub,))

    async def raise_it() -> None:
        raise error

    with pytest.raises(type(error)):
        await breaker.call(raise_it)
    assert breaker.stats().calls[counted_as] == 1
    assert sum(breaker.stats().calls.values()) == 1


async def test_a_result_predicate_turns_answers_into_failures() -> None:
    clock = ManualClock()
    breaker = make(clock, record_result=lambda status: status >= 500)

    async def status(code: int) -> int:
        return code

    for code in (200, 503, 502, 500):
        assert await breaker.call(status, code) == code
    assert breaker.state is S.OPEN
    assert breaker.stats().calls == {"success": 1, "failure": 3, "slow": 0, "ignored": 0}


# --- concurrency: nothing is held across the awaited call -------------------------------


async def test_fifty_slow_calls_run_concurrently() -> None:
    breaker = make(ManualClock())
    inside = 0
    all_inside = asyncio.Event()
    release = asyncio.Event()

    async def slow_call() -> str:
        nonlocal inside
        inside += 1
        if inside == 50:
            all_inside.set()
        await release.wait()  # only returns once all fifty are inside at once
        return "done"

    async with asyncio.timeout(5):
        tasks = [asyncio.create_task(breaker.call(slow_call)) for _ in range(50)]
        await all_inside.wait()
        release.set()
        assert await asyncio.gather(*tasks) == ["done"] * 50


# --- what a transition tells the world --------------------------------------------------


async def test_a_trip_logs_counts_and_notifies_sync_and_async_listeners() -> None:
    clock = ManualClock()
    registry = CollectorRegistry()
    breaker = make(clock, registry)
    seen_sync: list[BreakerTransition] = []
    seen_async: list[BreakerTransition] = []

    async def async_listener(event: BreakerTransition) -> None:
        await asyncio.sleep(0)
        seen_async.append(event)

    def failing_listener(event: BreakerTransition) -> None:
        raise RuntimeError("listeners never break the breaker")

    breaker.add_listener(seen_sync.append)
    breaker.add_listener(failing_listener)
    breaker.add_listener(async_listener)
    with capture_logs() as logs:
        await trip(breaker, clock)
        with pytest.raises(BreakerOpen):
            await breaker.call(ok)

    assert [e.transition for e in seen_sync] == [Transition.CLOSED_TO_OPEN]
    assert seen_async == seen_sync
    event = seen_sync[0]
    assert event.reason is TransitionReason.FAILURE_RATE_EXCEEDED
    assert (event.window.calls, event.window.failed) == (4, 4)
    changed = [line for line in logs if line["event"] == "breaker_state_changed"]
    assert changed == [
        {
            "event": "breaker_state_changed",
            "log_level": "warning",
            "breaker": "dep",
            "from_state": "closed",
            "to_state": "open",
            "reason": "failure_rate_exceeded",
            "calls": 4,
            "failure_rate": 100.0,
            "slow_call_rate": 0.0,
        }
    ]
    assert any(line["event"] == "breaker_listener_failed" for line in logs)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"breaker": "dep", **labels})

    assert sample("keel_breaker_state", state="open") == 1.0
    assert sample("keel_breaker_state", state="closed") == 0.0
    assert sample("keel_breaker_calls_total", outcome="failure") == 4.0
    assert sample("keel_breaker_not_permitted_total") == 1.0
    assert sample("keel_breaker_transitions_total", from_state="closed", to_state="open") == 1.0


async def test_protect_decorates_a_coroutine_function() -> None:
    breaker = make(ManualClock())

    @breaker.protect
    async def double(x: int) -> int:
        return 2 * x

    assert await double(21) == 42
    assert breaker.stats().calls["success"] == 1


# --- run(awaitable): the lean form, and the fast path against the whole path -------------


async def drive(breaker: CircuitBreaker, pattern: str, clock: ManualClock, *, lean: bool) -> None:
    """As :func:`outcomes` (and o = wait out OPEN), through ``run(awaitable)`` when
    ``lean``, else ``call(fn)``."""
    for letter in pattern:
        if letter == "o":
            clock.advance(31.0)
            continue
        fn = ok if letter == "s" else boom if letter == "f" else slow(clock, 2.0)
        try:
            if lean:
                await breaker.run(fn())  # type: ignore[operator]
            else:
                await breaker.call(fn)  # type: ignore[arg-type]
        except (Boom, BreakerOpen):
            pass


async def through_every_path(pattern: str) -> list[tuple[BreakerState, dict[str, int], int]]:
    results: list[tuple[BreakerState, dict[str, int], int]] = []
    for lean, store in (
        (True, None),
        (False, None),
        (True, MemoryBreakerStateStore()),
        (False, MemoryBreakerStateStore()),
    ):
        clock = ManualClock()
        breaker = CircuitBreaker(
            "dep",
            make(clock).config,
            clock=clock,
            store=store,
            metrics=ResilienceMetrics(CollectorRegistry()),
        )
        await drive(breaker, pattern, clock, lean=lean)
        stats = breaker.stats()
        results.append((breaker.state, dict(stats.calls), stats.not_permitted))
    return results


@pytest.mark.parametrize(
    "pattern",
    [
        "ssss",
        "ffff",
        "sfsfsfsf",
        "wwwws",
        "ffffossss",
        "ffffoffs",
        "sswwffsswwffo",
        "ffffosfss",
        "s" * 12 + "f" * 6,  # a full window of successes (the fast path's no-op), then failures
        "s" * 10 + "w" * 6 + "s" * 10 + "f" * 5,
    ],
)
async def test_run_call_and_the_store_path_agree_on_every_outcome(pattern: str) -> None:
    """The fast path (no store) decides exactly as the whole path (with a store)."""
    first, *others = await through_every_path(pattern)
    assert all(other == first for other in others)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="sfwo", max_size=80))
def test_every_path_agrees_on_any_sequence_of_outcomes(pattern: str) -> None:
    first, *others = asyncio.run(through_every_path(pattern))
    assert all(other == first for other in others)


async def test_a_refused_coroutine_is_closed_and_never_runs() -> None:
    clock = ManualClock()
    breaker = make(clock)
    await trip(breaker, clock)
    ran: list[str] = []

    async def effect() -> str:
        ran.append("ran")
        return "ok"

    coroutine = effect()
    with pytest.raises(BreakerOpen):
        await breaker.run(coroutine)
    assert ran == []
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


def reference_trip_index(pattern: str, size: int = 10, minimum: int = 4) -> int | None:
    """A plain model of ``make``'s count window: the call after which it opens."""
    window: list[str] = []
    for index, letter in enumerate(pattern):
        window = [*window, letter][-size:]
        if len(window) >= minimum and (
            window.count("f") * 100 >= 50 * len(window)
            or window.count("w") * 100 >= 50 * len(window)
        ):
            return index
    return None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="sfw", max_size=80))
def test_the_fast_path_opens_exactly_when_a_plain_window_says_so(pattern: str) -> None:
    async def run_until_open() -> int | None:
        clock = ManualClock()
        breaker = make(clock)
        for index, letter in enumerate(pattern):
            await drive(breaker, letter, clock, lean=True)
            if breaker.state is S.OPEN:
                return index
        return None

    assert asyncio.run(run_until_open()) == reference_trip_index(pattern)


async def test_a_success_after_a_full_window_of_successes_still_pushes_failures_out() -> None:
    clock = ManualClock()
    breaker = make(clock)
    await drive(breaker, "s" * 10 + "f" + "s" * 10 + "ffff", clock, lean=True)
    assert breaker.state is S.CLOSED  # 4 failures in the last 10 calls: under 50 %
    assert breaker.snapshot().failed == 4

"""The job queue's pure rules: the state table, the retry schedule, cron slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import ConfigurationError
from keel.jobs.notifications import retry_after_seconds, webhook_host
from keel.jobs.registry import Periodic, Registry, UnknownJobType
from keel.jobs.retry import RetryPolicy, after_failure, deferral
from keel.jobs.states import (
    FINISHED,
    QUEUED,
    TRANSITIONS,
    IllegalTransition,
    JobState,
    check,
    sources_of,
)
from keel.jobs.worker import parse_queues

S = JobState
NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "target", "legal"),
    [
        (S.READY, S.RUNNING, True),
        (S.SCHEDULED, S.RUNNING, True),
        (S.RETRYING, S.RUNNING, True),
        (S.RUNNING, S.SUCCEEDED, True),
        (S.RUNNING, S.RETRYING, True),
        (S.RUNNING, S.DEAD, True),
        (S.RUNNING, S.READY, True),  # lease expired or released on shutdown
        (S.DEAD, S.READY, True),  # requeue
        (S.READY, S.CANCELLED, True),
        (S.RUNNING, S.CANCELLED, False),
        (S.SUCCEEDED, S.READY, False),
        (S.CANCELLED, S.READY, False),
        (S.DEAD, S.RUNNING, False),
        (S.READY, S.SUCCEEDED, False),
    ],
)
def test_transition_table(source: JobState, target: JobState, legal: bool) -> None:
    if legal:
        check(source, target)
    else:
        with pytest.raises(IllegalTransition):
            check(source, target)


def test_every_state_is_in_the_table_and_finished_states_are_final() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert all(not TRANSITIONS[s] - {S.READY} for s in FINISHED)
    assert sources_of(S.RUNNING) == QUEUED


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0), (10, 600.0), (500, 600.0)],
)
def test_backoff_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert (
        RetryPolicy(max_attempts=1000, base_seconds=2, cap_seconds=600).ceiling(attempt) == ceiling
    )


@given(attempt=st.integers(1, 10_000), draw=st.floats(0, 1))
def test_full_jitter_stays_within_zero_and_the_ceiling(attempt: int, draw: float) -> None:
    policy = RetryPolicy(max_attempts=10_001, base_seconds=1.5, cap_seconds=900)
    outcome = after_failure(policy, attempt=attempt, max_attempts=10_001, now=NOW, draw=draw)
    assert outcome.state is S.RETRYING
    assert outcome.run_at is not None
    assert NOW <= outcome.run_at <= NOW + timedelta(seconds=policy.ceiling(attempt))


def test_last_attempt_dead_letters() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert after_failure(policy, attempt=2, max_attempts=3, now=NOW, draw=0.5).state is S.RETRYING
    dead = after_failure(policy, attempt=3, max_attempts=3, now=NOW, draw=0.5)
    assert (dead.state, dead.run_at) == (S.DEAD, None)


def test_jitter_draws_spread_the_retries() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=10)
    times = {
        after_failure(policy, attempt=3, max_attempts=5, now=NOW, draw=d / 10).run_at
        for d in range(10)
    }
    assert len(times) == 10


@given(attempt=st.integers(1, 50), draw=st.floats(0, 1), hint=st.floats(0, 10_000))
def test_retry_after_is_a_floor_on_the_backoff_never_past_the_cap(
    attempt: int, draw: float, hint: float
) -> None:
    policy = RetryPolicy(max_attempts=100, base_seconds=5, cap_seconds=900)
    plain = after_failure(policy, attempt=attempt, max_attempts=100, now=NOW, draw=draw)
    hinted = after_failure(
        policy, attempt=attempt, max_attempts=100, now=NOW, draw=draw, not_before=hint
    )
    assert plain.run_at is not None
    assert hinted.run_at is not None
    assert hinted.run_at >= plain.run_at
    assert hinted.run_at >= NOW + timedelta(seconds=min(hint, 900))
    assert hinted.run_at <= NOW + timedelta(seconds=900)


@given(wait=st.floats(0, 3600), draw=st.floats(0, 1))
def test_a_deferred_job_waits_its_retry_after_plus_at_most_half_again(
    wait: float, draw: float
) -> None:
    run_at = deferral(wait, now=NOW, draw=draw)
    assert NOW + timedelta(seconds=wait) <= run_at <= NOW + timedelta(seconds=wait * 1.5)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://hooks.example.com/keel", "hooks.example.com"),
        ("https://Hooks.Example.com:8443/x?y=1", "hooks.example.com:8443"),
        ("http://user:pw@127.0.0.1:9000/hook", "127.0.0.1:9000"),
        ("http://[::1]:9000/hook", "::1:9000"),
    ],
)
def test_webhooks_are_keyed_by_host_and_port(url: str, host: str) -> None:
    assert webhook_host(url) == host


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        ("Sun, 29 Nov 2026 03:02:00 GMT", 120.0),
        ("Sun, 29 Nov 2026 02:00:00 GMT", 0.0),  # in the past: at once
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_header_in_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


@pytest.mark.parametrize(
    ("cron", "now", "slot"),
    [
        (
            "*/5 * * * *",
            datetime(2026, 1, 1, 0, 7, 30, tzinfo=UTC),
            datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
        ),
        (
            "*/5 * * * *",
            datetime(2026, 1, 1, 0, 10, tzinfo=UTC),
            datetime(2026, 1, 1, 0, 10, tzinfo=UTC),
        ),
        (
            "17 * * * *",
            datetime(2026, 1, 1, 3, 16, 59, tzinfo=UTC),
            datetime(2026, 1, 1, 2, 17, tzinfo=UTC),
        ),
        (
            "0 0 * * *",
            datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
            datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        ),
    ],
)
def test_latest_slot(cron: str, now: datetime, slot: datetime) -> None:
    assert Periodic("p", cron, "t").latest_slot(now) == slot


def test_periodic_refuses_a_bad_cron_and_an_unknown_job_type() -> None:
    with pytest.raises(ConfigurationError):
        Periodic("p", "every tuesday", "t")
    with pytest.raises(UnknownJobType):
        Registry([], [Periodic("p", "* * * * *", "nobody")]).check()


def test_parse_queues() -> None:
    assert parse_queues("critical=4, default ,exports=2", 3) == {
        "critical": 4,
        "default": 3,
        "exports": 2,
    }

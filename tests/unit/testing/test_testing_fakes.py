"""keel.testing's log capture and retry switch behave as the module promises."""

from __future__ import annotations

import structlog

from keel.resilience import RetryConfig, RetryPolicy, is_testing
from keel.settings import Settings
from keel.testing import ManualClock, capture_logs, no_retry_delays

SECRET = "s3cret-value-in-settings-0123456789"


def test_captured_lines_are_redacted_as_written_lines_are() -> None:
    settings = Settings(secret_key=SECRET)
    with capture_logs(settings) as logs:
        structlog.get_logger().warning(
            "login_failed", password="hunter22", note=f"key was {SECRET}", attempts=3
        )
    assert [line["event"] for line in logs] == ["login_failed"]
    line = logs[0]
    assert line["password"] == "[REDACTED]"
    assert SECRET not in line["note"]
    assert line["attempts"] == 3
    assert line["log_level"] == "warning"


def test_captured_exceptions_are_tracebacks_without_locals() -> None:
    with capture_logs() as logs:
        token = "local-bearer-token-value"  # a frame local that must not be logged
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger().exception("failed")
    assert "exc_info" not in logs[0]
    assert "ValueError: boom" in logs[0]["exception"]
    assert token not in logs[0]["exception"]


def test_request_context_is_in_captured_lines_and_configuration_is_restored() -> None:
    before = structlog.get_config()["processors"]
    structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        with capture_logs() as logs:
            structlog.get_logger().info("served")
    finally:
        structlog.contextvars.clear_contextvars()
    assert logs[0]["request_id"] == "r-1"
    assert structlog.get_config()["processors"] == before


class _Flaky(Exception):
    retry_after = 30.0  # a hint that would otherwise be slept


async def test_no_retry_delays_retries_at_once_and_restores_the_switch() -> None:
    slept: list[float] = []
    clock = ManualClock()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    failures = [_Flaky(), _Flaky()]

    async def attempt() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    config = RetryConfig(max_attempts=3, initial_backoff=1.0, max_backoff=8.0, max_retry_after=60)
    retry = RetryPolicy(config, clock=clock, sleep=sleep, also_require=lambda _e: True)
    assert not is_testing()
    with no_retry_delays():
        assert is_testing()
        assert await retry.run(attempt, idempotent=True) == "ok"
    assert not is_testing()
    assert slept == [0.0, 0.0]

"""``keel serve``'s settings reach uvicorn: the supervisor's timeouts are Keel's, not uvicorn's."""

from __future__ import annotations

import uvicorn

from keel.serve import supervisor_policy, uvicorn_config
from keel.settings import Settings


def test_the_health_check_timeout_setting_reaches_uvicorns_supervisor() -> None:
    settings = Settings(serve_worker_healthcheck_seconds=42.5, shutdown_grace_seconds=7.2)

    config = uvicorn_config(settings, host="127.0.0.1", port=8123, workers=3)

    assert isinstance(config, uvicorn.Config)
    # Whole seconds in uvicorn, rounded up: never stricter than asked.
    assert config.timeout_worker_healthcheck == 43
    assert config.timeout_graceful_shutdown == 8
    assert config.workers == 3
    assert (config.host, config.port) == ("127.0.0.1", 8123)


def test_the_default_health_check_is_not_uvicorns_five_seconds() -> None:
    config = uvicorn_config(Settings(), host="127.0.0.1", port=8000, workers=2)

    assert config.timeout_worker_healthcheck >= 30


def test_a_stopping_worker_is_killed_only_after_drain_settle_grace_and_kill_grace() -> None:
    settings = Settings(
        shutdown_drain_seconds=5,
        serve_listener_settle_seconds=0.5,
        shutdown_grace_seconds=19.5,
        serve_worker_kill_grace_seconds=10,
    )

    policy = supervisor_policy(settings)

    assert policy.settle_seconds == 0.5
    assert policy.start_seconds == Settings().serve_worker_start_seconds
    assert policy.stop_seconds == 5 + 0.5 + 20 + 10

"""Running Keel's ASGI app under uvicorn: one process, or a supervisor and N workers.

``keel serve`` is a thin wrapper over ``run``. Keel owns the server and the
supervisor (``KeelServer``, ``KeelSupervisor``) rather than calling
``uvicorn.run`` because a stop must never accept a connection it will not
serve — whatever the number of workers — and because the supervisor's
timeouts must be settings, not uvicorn's constants. The drain itself (``/ready``
503 while still serving) is the app's, in ``keel.observe.shutdown``.
"""

from __future__ import annotations

import math
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from keel.serve.server import KeelServer
from keel.serve.supervisor import KeelSupervisor, SupervisorPolicy
from keel.settings import Settings

APP = "keel.app:create_app_from_environment"


def uvicorn_config(settings: Settings, *, host: str, port: int, workers: int) -> uvicorn.Config:
    """uvicorn's configuration for ``keel serve``, the supervisor's timeouts included."""
    return uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=False,
        server_header=False,
        log_config=None,  # Keel's structlog setup renders uvicorn's lines
        access_log=False,  # Keel writes its own access line
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        # uvicorn takes whole seconds; rounding up never makes the ping stricter.
        timeout_worker_healthcheck=math.ceil(settings.serve_worker_healthcheck_seconds),
    )


def supervisor_policy(settings: Settings) -> SupervisorPolicy:
    return SupervisorPolicy(
        settle_seconds=settings.serve_listener_settle_seconds,
        start_seconds=settings.serve_worker_start_seconds,
        stop_seconds=settings.shutdown_drain_seconds
        + settings.serve_listener_settle_seconds
        + math.ceil(settings.shutdown_grace_seconds)
        + settings.serve_worker_kill_grace_seconds,
    )


def run(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Serve until stopped; the process exits with uvicorn's startup-failure code on failure."""
    config = uvicorn_config(settings, host=host, port=port, workers=workers)
    policy = supervisor_policy(settings)
    if config.workers > 1:
        listener = config.bind_socket()
        supervisor = KeelSupervisor(config, [listener], policy)
        supervisor.run()
        if supervisor.startup_failed:  # uvicorn's own supervisor exited 0 here
            sys.exit(STARTUP_FAILURE)
        return
    server = KeelServer(config, settle_seconds=policy.settle_seconds)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


__all__ = [
    "KeelServer",
    "KeelSupervisor",
    "SupervisorPolicy",
    "run",
    "supervisor_policy",
    "uvicorn_config",
]

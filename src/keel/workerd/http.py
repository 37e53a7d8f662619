"""The worker's HTTP port: ``/live``, ``/ready`` and ``/metrics``, nothing else.

A tiny Starlette app under uvicorn, served from the worker's own event loop, so
a probe answers only while that loop does. It shares the API's probe semantics
and body (``keel.observe.health``): ``/live`` reads the event-loop lag and
touches no dependency; ``/ready`` runs the registered checks (cached) and fails
while the process drains; both answer ``application/health+json``, or
Kubernetes-style text with ``?verbose``. It does not import ``keel.api``: a
worker needs none of the API's routes, middleware or dependencies.

uvicorn's server would install its own SIGTERM/SIGINT handlers and stop on the
first signal; here the worker (or the supervisor) owns the signals, drains,
and stops this server last. The socket is bound before serving, so a port in
use is a clear start-up error rather than an exit from inside a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from keel import __version__
from keel.errors import ConfigurationError
from keel.observe.health import (
    MEDIA_TYPE,
    HealthRegistry,
    Report,
    Status,
    health_document,
    static_check,
    status_code,
)
from keel.observe.lifecycle import Lifecycle
from keel.observe.watchdog import LoopWatchdog

# The API's problem+json (``keel.api.problems``) lives with FastAPI; the few errors
# this port can answer (404, 405) are written here in the same shape.
PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://keel.dev/problems/"
_PROBLEMS = {404: ("not-found", "Not found"), 405: ("method-not-allowed", "Method not allowed")}

_LOOP = static_check("eventloop", "system", "lag")
_LIFECYCLE = static_check("lifecycle", "system", "draining")
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Probes:
    """What the port reports on: the process's checks, its drain and its loop."""

    health: HealthRegistry
    lifecycle: Lifecycle
    watchdog: LoopWatchdog
    metrics: Callable[[], Awaitable[tuple[bytes, str]]]
    release_id: str
    service_id: str
    description: str  # "worker" or "worker supervisor"
    live_lag_warn_seconds: float


def probe_app(probes: Probes) -> Starlette:
    def answer(report: Report, kind: str, request: Request, max_age: int) -> Response:
        headers = {"Cache-Control": f"max-age={max_age}"}
        code = status_code(report)
        if "verbose" in request.query_params:
            return PlainTextResponse(report.verbose_text(kind), status_code=code, headers=headers)
        body = health_document(
            report,
            f"{probes.description} {kind}",
            version=__version__,
            release_id=probes.release_id,
            service_id=probes.service_id,
        )
        return JSONResponse(body, status_code=code, headers=headers, media_type=MEDIA_TYPE)

    async def live(request: Request) -> Response:
        lag = probes.watchdog.lag_seconds
        status = Status.PASS if lag < probes.live_lag_warn_seconds else Status.WARN
        output = None if status is Status.PASS else "event loop lagging"
        reading = probes.health.reading(_LOOP, status, round(lag, 6), "s", output)
        return answer(Report((reading,), taken_at=0.0), "livez", request, 0)

    async def ready(request: Request) -> Response:
        registry = probes.health
        report = await registry.readiness()
        max_age = max(0, math.floor(registry.cache_seconds - registry.age(report)))
        if probes.lifecycle.draining:
            drain = registry.reading(_LIFECYCLE, Status.FAIL, True, None, "draining: shutting down")
            report, max_age = report.with_extra(drain), 0
        return answer(report, "readyz", request, max_age)

    async def metrics(_request: Request) -> Response:
        payload, content_type = await probes.metrics()
        return Response(payload, media_type=content_type)

    async def problem(request: Request, error: Exception) -> Response:
        code = error.status_code if isinstance(error, HTTPException) else 500
        slug, title = _PROBLEMS.get(code, ("internal", "Internal error"))
        body = {
            "type": PROBLEM_TYPE_BASE + slug,
            "title": title,
            "status": code,
            "detail": f"{request.method} {request.url.path}: {title.lower()}",
            "instance": request.url.path,
        }
        return JSONResponse(body, status_code=code, media_type=PROBLEM_MEDIA_TYPE)

    return Starlette(
        routes=[
            Route("/live", live, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={HTTPException: problem},
    )


class _SignalFreeServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the worker owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ProbeServer:
    """The port, served as a task of the current event loop between ``start`` and ``stop``."""

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._app = app
        self._server: _SignalFreeServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            listener = socket.create_server((self.host, self.port), reuse_port=False)
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen on {self.host}:{self.port} for the worker's probes and metrics "
                f"({error.strerror}); choose another with --http-port or KEEL_WORKER_HTTP_PORT "
                "(0: no HTTP port)"
            ) from error
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,  # Keel's structlog setup renders uvicorn's lines
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(STOP_TIMEOUT_SECONDS),
        )
        self._server = _SignalFreeServer(config)
        self._task = asyncio.create_task(self._server.serve([listener]), name="worker-http")
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            while not self._server.started:
                if self._task.done():
                    listener.close()
                    await self._task  # raises what stopped it
                    raise ConfigurationError("the worker's HTTP port stopped while starting")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS + 1):
                await asyncio.shield(self._task)
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

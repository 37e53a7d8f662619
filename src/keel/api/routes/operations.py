"""``/live``, ``/ready``, ``/health``, ``/metrics`` and ``/version``.

None of them needs a token (the authentication middleware guards ``/v1/`` only).
``/live`` never touches a dependency; ``/ready`` runs the registered checks
(cached); ``/health`` summarises the cached readiness cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from keel import __version__, migrations
from keel.api.services import services_of
from keel.errors import InvalidInput
from keel.observe.health import (
    MEDIA_TYPE,
    Report,
    Status,
    health_document,
    static_check,
    status_code,
)
from keel.observe.version import (
    VersionInfo,
    dependency_types,
    limit_policy_hash,
    settings_fingerprint,
    slo_rules_hash,
)
from keel.settings import Settings

if TYPE_CHECKING:
    from keel.observe import Observability

router = APIRouter(tags=["operations"])

_LOOP = static_check("eventloop", "system", "lag")
_UPTIME = static_check("uptime", "system", "uptime")
_LIFECYCLE = static_check("lifecycle", "system", "draining")


def _settings(request: Request) -> Settings:
    return services_of(request).settings


def _observe(request: Request) -> Observability:
    return services_of(request).observe


def _answer(
    settings: Settings, report: Report, kind: str, *, verbose: bool, max_age: int
) -> Response:
    code = status_code(report)
    headers = {"Cache-Control": f"max-age={max_age}"}
    if verbose:
        return PlainTextResponse(report.verbose_text(kind), status_code=code, headers=headers)
    body = health_document(
        report,
        kind,
        version=__version__,
        release_id=settings.release_id,
        service_id=settings.service_id,
    )
    return JSONResponse(body, status_code=code, headers=headers, media_type=MEDIA_TYPE)


def _max_age(observe: Observability, report: Report) -> int:
    registry = observe.health
    return max(0, math.floor(registry.cache_seconds - registry.age(report)))


def live_answer(observe: Observability, settings: Settings, *, verbose: bool = False) -> Response:
    """``/live``: the event loop's lag against its warning threshold, nothing else."""
    registry = observe.health
    lag = observe.watchdog.lag_seconds
    status = Status.PASS if lag < settings.live_loop_lag_warn_seconds else Status.WARN
    reading = registry.reading(
        _LOOP, status, round(lag, 6), "s", None if status is Status.PASS else "event loop lagging"
    )
    report = Report((reading,), taken_at=0.0)
    return _answer(settings, report, "livez", verbose=verbose, max_age=0)


async def ready_answer(
    observe: Observability,
    settings: Settings,
    *,
    verbose: bool = False,
    exclude: Sequence[str] = (),
) -> Response:
    """``/ready``: the registered checks (cached), failing while the process drains."""
    known = {check.name for check in observe.health.checks}
    unknown = sorted(set(exclude) - known)
    if unknown:  # a typo would silently keep the check: refuse it
        raise InvalidInput(
            f"no readiness check named {', '.join(unknown)}", field="exclude", allowed=sorted(known)
        )
    report = await observe.health.readiness()
    max_age = _max_age(observe, report)
    report = report.without(exclude)
    if observe.lifecycle.draining:
        report = report.with_extra(
            observe.health.reading(_LIFECYCLE, Status.FAIL, True, None, "draining: shutting down")
        )
        max_age = 0
    return _answer(settings, report, "readyz", verbose=verbose, max_age=max_age)


async def health_answer(
    observe: Observability, settings: Settings, *, verbose: bool = False
) -> Response:
    """``/health``: status, version, release and uptime from the cached readiness."""
    registry = observe.health
    cached = registry.cached() or await registry.readiness()
    status = cached.status
    if observe.lifecycle.draining:
        status = Status.FAIL
    uptime = registry.reading(
        _UPTIME, status, round(observe.lifecycle.uptime_seconds(), 3), "s", None
    )
    summary = Report((uptime,), cached.taken_at)
    if status is not Status.PASS:
        failing = [r.check.name for r in cached.all if r.status is not Status.PASS]
        reason = "draining" if observe.lifecycle.draining else ", ".join(failing)
        summary = Report(
            (registry.reading(_UPTIME, status, uptime.value, "s", f"not passing: {reason}"),),
            cached.taken_at,
        )
    return _answer(settings, summary, "health", verbose=verbose, max_age=_max_age(observe, cached))


async def metrics_answer(observe: Observability) -> Response:
    """``/metrics``: the Prometheus text, the database-read families refreshed first."""
    metrics = observe.metrics
    await metrics.refresh()  # the families read from the database (bounded, cached)
    payload, content_type = metrics.render()
    return Response(payload, media_type=content_type)


def plain_answers(
    observe: Observability, settings: Settings
) -> dict[str, Callable[[], Awaitable[Response]]]:
    """Each probe's and ``/metrics``' answer to a ``GET`` without a query string, by path.

    What :class:`~keel.http.probes.OperationalShortcut` serves without the router;
    the same functions as the routes below, with every parameter at its default.
    """

    async def live() -> Response:
        return live_answer(observe, settings)

    async def ready() -> Response:
        return await ready_answer(observe, settings)

    async def health() -> Response:
        return await health_answer(observe, settings)

    async def metrics() -> Response:
        return await metrics_answer(observe)

    return {"/live": live, "/ready": ready, "/health": health, "/metrics": metrics}


_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "pass or warn (application/health+json; text/plain with ?verbose)",
        "content": {"application/health+json": {}, "text/plain": {}},
    },
    503: {
        "description": "fail, or draining (application/health+json; text/plain with ?verbose)",
        "content": {"application/health+json": {}, "text/plain": {}},
    },
}


Verbose = Annotated[str | None, Query(description="Plain-text `[+]`/`[-]` lines instead of JSON.")]
# Check names are ``component`` names (``database``, ``storage``, ``redis``, …).
CHECK_NAME = r"^[a-z][a-z0-9_.-]{0,63}$"
Exclude = Annotated[
    list[Annotated[str, Query(pattern=CHECK_NAME)]] | None,
    Query(description="Skip the named check(s)."),
]


@router.get(
    "/live",
    responses=_HEALTH_RESPONSES,
    response_class=Response,
    summary="Liveness: the event loop answers (no dependency touched)",
)
async def live(request: Request, verbose: Verbose = None) -> Response:
    return live_answer(_observe(request), _settings(request), verbose=verbose is not None)


@router.get(
    "/ready",
    responses=_HEALTH_RESPONSES,
    response_class=Response,
    summary="Readiness: dependency checks, cached",
)
async def ready(request: Request, verbose: Verbose = None, exclude: Exclude = None) -> Response:
    return await ready_answer(
        _observe(request), _settings(request), verbose=verbose is not None, exclude=exclude or ()
    )


@router.get(
    "/health",
    responses=_HEALTH_RESPONSES,
    response_class=Response,
    summary="Summary: status, version, release, uptime",
)
async def health(request: Request, verbose: Verbose = None) -> Response:
    return await health_answer(_observe(request), _settings(request), verbose=verbose is not None)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    summary="Prometheus metrics (text format)",
)
async def metrics(request: Request) -> Response:
    return await metrics_answer(_observe(request))


@router.get(
    "/version",
    summary="What is running: version, release, schema, settings, dependencies, policies",
    responses={200: {"model": VersionInfo}},
)
async def version(request: Request) -> JSONResponse:
    settings = _settings(request)
    try:
        schema: str | None = await migrations.current_revision(services_of(request).database)
    except Exception:  # the version must answer even with the database down
        schema = None
    head = migrations.head_revision(settings.database_url)
    return JSONResponse(
        {
            "version": __version__,
            "git_sha": settings.git_sha,
            "release": {
                "version": __version__,
                "git_sha": settings.git_sha,
                "migration_head": head,
            },
            "release_id": settings.release_id,
            "service_id": settings.service_id,
            "schema_revision": schema,
            "schema_head": head,
            "settings_fingerprint": settings_fingerprint(settings),
            "dependencies": dependency_types(settings),
            "limit_policy_hash": limit_policy_hash(settings),
            "slo_rules_hash": slo_rules_hash(settings),
        }
    )

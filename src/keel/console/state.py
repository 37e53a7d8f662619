"""What ``/ops/state`` answers: one snapshot of the service for the console.

Each section is read from its owner, concurrently (the error budgets from the
per-minute SLO rollups, as ``keel slo report`` reads them), under the health-check timeout.
A section that fails or times out is reported in ``errors`` under its name and the
others still answer: the console is most needed exactly when a dependency is down,
so it must never fail as a whole because one part of it cannot be read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from keel import __version__
from keel.audit import Auditor
from keel.clock import Clock
from keel.db.engine import Database
from keel.deploy.store import DeploymentStore
from keel.guard.breaches import top_offenders
from keel.guard.noisy_watch import active_flags
from keel.jobs import queue
from keel.jobs.states import JobState
from keel.observe.health import HealthRegistry
from keel.observe.metrics import request_histogram
from keel.resilience import BreakerRegistry
from keel.settings import Settings
from keel.slo import Objective, load_objectives
from keel.slo.report import read_reports

BREACH_WINDOW = timedelta(hours=1)
TOP_BREACHES = 10


@dataclass(frozen=True, slots=True)
class ConsoleSources:
    """The parts the console reads, and nothing else of the service."""

    settings: Settings
    database: Database
    health: HealthRegistry
    breakers: BreakerRegistry
    auditor: Auditor
    clock: Clock


@functools.lru_cache(maxsize=8)
def _objectives(slo_file: Path | None, latency_seconds: float) -> tuple[Objective, ...]:
    # The SLO file is read once per (file, bucket edge), not on every refresh.
    return load_objectives(slo_file, request_histogram(latency_seconds))


async def _slos(sources: ConsoleSources) -> list[dict[str, Any]]:
    """Each SLO's budget and burn rates from the per-minute rollups (``keel slo report``)."""
    settings = sources.settings
    objectives = _objectives(settings.slo_file, settings.slo_latency_seconds)
    reports = await read_reports(sources.database, objectives, sources.clock.now())
    return [report.as_json() for report in reports]


async def _readiness(sources: ConsoleSources) -> dict[str, Any]:
    report = await sources.health.readiness()
    return {
        "status": report.status.value,
        "checks": [
            {
                "name": reading.check.name,
                "component_type": reading.check.component_type,
                "status": reading.status.value,
                "output": reading.output,
            }
            for reading in report.all
        ],
    }


async def _queues(sources: ConsoleSources) -> dict[str, Any]:
    stats = await queue.stats(sources.database, sources.clock.now())
    return {
        "queues": [item.as_dict() for item in stats],
        "dead": sum(item.depth.get(JobState.DEAD, 0) for item in stats),
    }


async def _breakers(sources: ConsoleSources) -> list[dict[str, Any]]:
    return [
        {
            "name": status.name,
            "state": status.state.value,
            "changed_at": status.changed_at.isoformat() if status.changed_at else None,
            "reason": status.reason.value if status.reason else None,
        }
        for status in await sources.breakers.list()
    ]


async def _breaches(sources: ConsoleSources) -> list[dict[str, Any]]:
    offenders = await top_offenders(
        sources.database, since=BREACH_WINDOW, limit=TOP_BREACHES, clock=sources.clock
    )
    return [
        {
            "limit": offender.limit_name,
            "org_id": offender.org_id,
            "breaches": offender.breaches,
            "last_at": offender.last_at.isoformat(),
        }
        for offender in offenders
    ]


async def _noisy(sources: ConsoleSources) -> list[dict[str, Any]]:
    return [
        {
            "org_id": flag.org_id,
            "reason": flag.reason,
            "value": flag.value,
            "threshold": flag.threshold,
            "flagged_at": flag.flagged_at.isoformat(),
        }
        for flag in await active_flags(sources.database)
    ]


async def _deployments(sources: ConsoleSources) -> list[dict[str, Any]]:
    store = DeploymentStore(sources.database, sources.auditor, clock=sources.clock)
    return [deployment.as_dict() for deployment in await store.active()]


Section = Callable[[ConsoleSources], Awaitable[Any]]

SECTIONS: dict[str, Section] = {
    "slos": _slos,
    "readiness": _readiness,
    "jobs": _queues,
    "breakers": _breakers,
    "breaches": _breaches,
    "noisy": _noisy,
    "deployments": _deployments,
}


async def _read(name: str, section: Section, sources: ConsoleSources) -> tuple[str, Any, str]:
    timeout = sources.settings.health_check_timeout_seconds
    try:
        return name, await asyncio.wait_for(section(sources), timeout), ""
    except TimeoutError:
        return name, None, f"not read within {timeout:g} s"
    except Exception as error:  # one unreadable section must not hide the others
        return name, None, f"{type(error).__name__}: {error}"[:300]


async def snapshot(sources: ConsoleSources) -> dict[str, Any]:
    """Every section, read concurrently; failures listed in ``errors``."""
    results = await asyncio.gather(
        *(_read(name, section, sources) for name, section in SECTIONS.items())
    )
    settings = sources.settings
    state: dict[str, Any] = {
        "generated_at": sources.clock.now().isoformat(),
        "service": {
            "version": __version__,
            "release_id": settings.release_id,
            "git_sha": settings.git_sha,
            "service_id": settings.service_id,
        },
        "errors": {},
    }
    for name, value, error in results:
        state[name] = value
        if error:
            state["errors"][name] = error
    return state

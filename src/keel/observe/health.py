"""Health checks: a registry every part of Keel adds to, with timeouts and cached readings.

The response format is the IETF draft "Health Check Response Format for HTTP
APIs" (``application/health+json``): ``status`` is ``pass``, ``warn`` or
``fail``; ``checks`` is keyed ``component:measurement`` and each value is an
array of objects with ``componentType``, ``observedValue``, ``observedUnit``,
``status``, ``time`` and — only when not passing — ``output``.

Each check runs under its own timeout, and all of them run concurrently. A
reading is cached for ``health_cache_seconds`` and refreshed by one caller at
a time, so a storm of probes costs the database one ``SELECT 1`` per interval.
A critical check that fails makes readiness ``fail``; a non-critical one
(Redis, file storage, a degraded fallback) only ``warn``\\s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from keel.clock import Clock

MEDIA_TYPE = "application/health+json"


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a health status, not a password
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=Status.PASS)


@dataclass(frozen=True, slots=True)
class Observation:
    """What a probe saw. A probe that returns ``None`` is reported by its response time."""

    value: float | int | str | None = None
    unit: str | None = None
    status: Status = Status.PASS
    output: str | None = None


Probe = Callable[[], Awaitable[Observation | None]]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One dependency check; ``name`` is the component, shown as ``name:measurement``."""

    name: str
    component_type: str
    measurement: str
    probe: Probe
    critical: bool = True
    timeout: float | None = None  # None: the registry's default

    @property
    def key(self) -> str:
        return f"{self.name}:{self.measurement}"


@dataclass(frozen=True, slots=True)
class Reading:
    check: HealthCheck
    status: Status
    time: datetime
    value: float | int | str | None
    unit: str | None
    output: str | None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "componentType": self.check.component_type,
            "observedValue": self.value,
            "observedUnit": self.unit,
            "status": self.status.value,
            "time": self.time.isoformat().replace("+00:00", "Z"),
        }
        if self.unit is None:
            del body["observedUnit"]
        if self.status is not Status.PASS and self.output:
            body["output"] = self.output
        return body


@dataclass(frozen=True, slots=True)
class Report:
    """A set of readings and when they were taken (monotonic seconds)."""

    readings: tuple[Reading, ...]
    taken_at: float
    extra: tuple[Reading, ...] = field(default=())

    def without(self, excluded: Iterable[str]) -> Report:
        names = set(excluded)
        kept = tuple(r for r in self.readings if r.check.name not in names)
        return Report(kept, self.taken_at, self.extra)

    def with_extra(self, *readings: Reading) -> Report:
        return Report(self.readings, self.taken_at, (*self.extra, *readings))

    @property
    def all(self) -> tuple[Reading, ...]:
        return (*self.readings, *self.extra)

    @property
    def status(self) -> Status:
        return worst(r.status for r in self.all)

    def checks_json(self) -> dict[str, list[dict[str, Any]]]:
        checks: dict[str, list[dict[str, Any]]] = {}
        for reading in self.all:
            checks.setdefault(reading.check.key, []).append(reading.as_json())
        return checks

    def verbose_text(self, kind: str) -> str:
        """Kubernetes' ``?verbose`` form: one ``[+]``/``[-]`` line per check."""
        lines = []
        for reading in self.all:
            name = reading.check.name
            if reading.status is Status.PASS:
                lines.append(f"[+]{name} ok")
            elif reading.status is Status.WARN:
                lines.append(f"[+]{name} warn: {reading.output or 'degraded'}")
            else:
                lines.append(f"[-]{name} failed: {reading.output or 'failed'}")
        verdict = "failed" if self.status is Status.FAIL else "passed"
        lines.append(f"{kind} check {verdict}")
        return "\n".join(lines) + "\n"


class HealthRegistry:
    """The checks of one app; ``register`` is how other parts of Keel add theirs."""

    def __init__(self, *, clock: Clock, cache_seconds: float, default_timeout: float) -> None:
        self._clock = clock
        self.cache_seconds = cache_seconds
        self.default_timeout = default_timeout
        self._checks: dict[str, HealthCheck] = {}
        self._report: Report | None = None
        self._refreshing: asyncio.Lock | None = None

    def register(self, check: HealthCheck) -> None:
        if check.name in self._checks:
            raise ValueError(f"a health check named {check.name!r} is already registered")
        self._checks[check.name] = check
        self._report = None

    @property
    def checks(self) -> tuple[HealthCheck, ...]:
        return tuple(self._checks.values())

    def cached(self) -> Report | None:
        """The last reading if it is still fresh."""
        report = self._report
        if report is None or self.age(report) >= self.cache_seconds:
            return None
        return report

    def age(self, report: Report) -> float:
        return max(0.0, self._clock.monotonic() - report.taken_at)

    async def readiness(self) -> Report:
        """A fresh-enough reading: from the cache, or taken now by one caller for all."""
        report = self.cached()
        if report is not None:
            return report
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            report = self.cached()
            if report is None:
                report = await self.run_all()
                self._report = report
            return report

    async def run_all(self) -> Report:
        taken_at = self._clock.monotonic()
        readings = await asyncio.gather(*(self.run(check) for check in self.checks))
        return Report(tuple(readings), taken_at)

    async def run(self, check: HealthCheck) -> Reading:
        timeout = check.timeout if check.timeout is not None else self.default_timeout
        failed = Status.FAIL if check.critical else Status.WARN
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                observation = await check.probe()
        except TimeoutError:
            return self._reading(check, failed, None, None, f"timed out after {timeout:g}s")
        except Exception as error:  # a check reports any failure; it never raises
            return self._reading(check, failed, None, None, describe(error))
        if observation is None:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            return self._reading(check, Status.PASS, elapsed_ms, "ms", None)
        status = observation.status
        if status is Status.FAIL and not check.critical:
            status = Status.WARN
        return self._reading(check, status, observation.value, observation.unit, observation.output)

    def _reading(
        self,
        check: HealthCheck,
        status: Status,
        value: float | int | str | None,
        unit: str | None,
        output: str | None,
    ) -> Reading:
        return Reading(check, status, self._clock.now(), value, unit, output)

    def reading(
        self,
        check: HealthCheck,
        status: Status,
        value: float | int | str | None,
        unit: str | None = None,
        output: str | None = None,
    ) -> Reading:
        """A reading made by hand (uptime, draining) in the same shape as a probe's."""
        return self._reading(check, status, value, unit, output)


def status_code(report: Report) -> int:
    """The HTTP status a probe answers with: 503 on ``fail``, else 200 (``warn`` included)."""
    return 503 if report.status is Status.FAIL else 200


def health_document(
    report: Report, kind: str, *, version: str, release_id: str, service_id: str
) -> dict[str, Any]:
    """The ``application/health+json`` body of a probe, for every process that serves one
    (the API and ``keel worker``), so the two can never drift apart."""
    return {
        "status": report.status.value,
        "version": version,
        "releaseId": release_id,
        "serviceId": service_id,
        "description": f"Keel {kind}",
        "checks": report.checks_json(),
    }


def describe(error: BaseException) -> str:
    """A one-line reason for a failed check, without internals such as connection strings."""
    detail = getattr(error, "detail", None)
    if isinstance(detail, str):
        return detail
    return type(error).__name__


async def _never() -> (
    Observation | None
):  # pragma: no cover - placeholder probe of hand-made readings
    return None


def static_check(name: str, component_type: str, measurement: str) -> HealthCheck:
    """A check whose readings are made by hand (uptime, lifecycle), never probed."""
    return HealthCheck(name, component_type, measurement, _never, critical=False)

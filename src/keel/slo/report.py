"""``keel slo report``: error budgets and burn rates from the rollups in Keel's database.

The same arithmetic as the Prometheus rules (:mod:`keel.slo.rules`), on the
per-minute counts of :mod:`keel.slo.rollup` instead of the request histogram:

- a window's *error ratio* is ``1 - good / total`` over the rollup minutes that
  started within it (``now - window <= minute < now``): at a whole minute, the
  same requests a Prometheus range ``[window]`` sees when scraped every minute;
- its *burn rate* is the error ratio divided by the error budget (``1 - target``):
  1 spends exactly the budget over the SLO's period;
- the *remaining budget* is the share of the period's allowed bad requests not
  yet spent: ``1 - bad / (budget × total)`` over the period (negative once
  overspent);
- an alert *would fire* when both its long and its short window burn faster than
  its burn rate — the rules' condition. A window without requests has no ratio
  and fires nothing, as a Prometheus ratio of 0/0 (NaN) fires nothing.

Reading it is one query whatever the number of SLOs: a sum per window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, case, func, select

from keel.db.engine import Database
from keel.db.tables_slo import SLORollup
from keel.slo.rules import WORKBOOK_ALERTS, BurnRateAlert, alert_name, number, windows
from keel.slo.spec import Objective, render_duration

rollups: Table = SLORollup.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class WindowReading:
    """The SLO's requests over one window, and what they did to its budget."""

    seconds: int
    total: int
    good: int
    error_budget: float

    @property
    def window(self) -> str:
        return render_duration(self.seconds)

    @property
    def error_ratio(self) -> float | None:
        return None if self.total == 0 else (self.total - self.good) / self.total

    @property
    def burn_rate(self) -> float | None:
        ratio = self.error_ratio
        return None if ratio is None else ratio / self.error_budget


@dataclass(frozen=True, slots=True)
class AlertDecision:
    name: str
    severity: str
    burn_rate: float
    long: WindowReading
    short: WindowReading

    @property
    def threshold(self) -> float:
        """The error ratio above which the alert fires (burn rate × error budget)."""
        return self.burn_rate * self.long.error_budget

    @property
    def firing(self) -> bool:
        long, short = self.long.error_ratio, self.short.error_ratio
        return (
            long is not None
            and short is not None
            and long > self.threshold
            and short > self.threshold
        )


@dataclass(frozen=True, slots=True)
class SLOReport:
    objective: Objective
    windows: tuple[WindowReading, ...]
    alerts: tuple[AlertDecision, ...]

    @property
    def period(self) -> WindowReading:
        return self.windows[-1]

    @property
    def budget_remaining(self) -> float:
        """Share of the period's error budget left (1: untouched; below 0: overspent)."""
        period = self.period
        if period.total == 0:
            return 1.0
        allowed = period.error_budget * period.total
        return 1 - (period.total - period.good) / allowed

    def as_json(self) -> dict[str, Any]:
        objective = self.objective
        return {
            "slo": objective.name,
            "kind": objective.kind,
            "target": str(objective.target),
            "period": objective.period,
            "error_budget": number(objective.error_budget),
            "budget_remaining": self.budget_remaining,
            "windows": [
                {
                    "window": reading.window,
                    "total": reading.total,
                    "good": reading.good,
                    "error_ratio": reading.error_ratio,
                    "burn_rate": reading.burn_rate,
                }
                for reading in self.windows
            ],
            "alerts": [
                {
                    "alert": alert.name,
                    "severity": alert.severity,
                    "burn_rate": alert.burn_rate,
                    "long_window": alert.long.window,
                    "short_window": alert.short.window,
                    "firing": alert.firing,
                }
                for alert in self.alerts
            ],
        }


def report_windows(
    objective: Objective, alerts: Sequence[BurnRateAlert] = WORKBOOK_ALERTS
) -> tuple[int, ...]:
    """The alert rules' windows, then the SLO's period."""
    return (*windows(alerts), objective.period_seconds)


def build_report(
    objective: Objective,
    sums: Mapping[int, tuple[int, int]],
    alerts: Sequence[BurnRateAlert] = WORKBOOK_ALERTS,
) -> SLOReport:
    """The report from ``sums``: window seconds → (total, good) over that window."""
    budget = float(objective.error_budget)
    readings = {
        seconds: WindowReading(seconds, *sums.get(seconds, (0, 0)), error_budget=budget)
        for seconds in report_windows(objective, alerts)
    }
    decisions = tuple(
        AlertDecision(
            name=alert_name(objective, alert),
            severity=alert.severity,
            burn_rate=float(alert.burn_rate(objective.period_seconds)),
            long=readings[alert.long_window],
            short=readings[alert.short_window],
        )
        for alert in alerts
    )
    return SLOReport(objective, tuple(readings.values()), decisions)


def window_sums(
    minutes: Mapping[datetime, tuple[int, int]], now: datetime, seconds: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """(total, good) per window from per-minute counts (the query's arithmetic, in Python)."""
    sums: dict[int, tuple[int, int]] = {}
    for window in seconds:
        start = now - timedelta(seconds=window)
        inside = [counts for minute, counts in minutes.items() if start <= minute < now]
        sums[window] = (sum(t for t, _ in inside), sum(g for _, g in inside))
    return sums


async def read_reports(
    database: Database, objectives: Sequence[Objective], now: datetime
) -> list[SLOReport]:
    """Every SLO's report at ``now``, read in one query."""
    spans = sorted({w for objective in objectives for w in report_windows(objective)})
    columns = []
    for window in spans:
        inside = rollups.c.minute >= now - timedelta(seconds=window)
        for column in (rollups.c.total, rollups.c.good):
            columns.append(func.coalesce(func.sum(case((inside, column), else_=0)), 0))
    names = [objective.name for objective in objectives]
    query = (
        select(rollups.c.slo_name, *columns)
        .where(
            rollups.c.slo_name.in_(names),
            rollups.c.minute >= now - timedelta(seconds=max(spans, default=0)),
            rollups.c.minute < now,
        )
        .group_by(rollups.c.slo_name)
    )
    async with database.read() as session:
        rows = (await session.execute(query)).all()
    found = {
        row[0]: {
            window: (int(row[1 + 2 * i]), int(row[2 + 2 * i])) for i, window in enumerate(spans)
        }
        for row in rows
    }
    return [build_report(objective, found.get(objective.name, {})) for objective in objectives]


__all__ = [
    "AlertDecision",
    "SLOReport",
    "WindowReading",
    "build_report",
    "read_reports",
    "report_windows",
    "window_sums",
]

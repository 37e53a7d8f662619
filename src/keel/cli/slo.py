"""``keel slo``: Prometheus rules for the SLOs, the promtool tests that prove them, a
Grafana dashboard, and the error budgets read from Keel's own rollups."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from keel.cli._common import JsonOption, database, fail, out, print_json, run
from keel.clock import SYSTEM_CLOCK
from keel.errors import KeelError
from keel.observe.metrics import request_histogram
from keel.observe.version import slo_rule_files
from keel.settings import Settings
from keel.slo import objectives_json, write_rules
from keel.slo.dashboard import render_dashboard, write_dashboard
from keel.slo.report import SLOReport, read_reports
from keel.slo.spec import load_objectives

app = typer.Typer(
    help="Service level objectives: Prometheus rules and alerts, error budgets.",
    no_args_is_help=True,
)

FileOption = typer.Option(
    None, "--file", help="The SLO file (default: KEEL_SLO_FILE, else the one Keel ships)."
)


def _settings(file: Path | None) -> Settings:
    settings = Settings()
    return settings if file is None else settings.model_copy(update={"slo_file": file})


@app.command("rules")
def rules_command(
    file: Path | None = FileOption,
    output_dir: Path = typer.Option(
        Path("deploy/prometheus"), "--output-dir", help="Where to write the two files."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write recording rules, burn-rate alerts and their promtool unit tests.

    A latency objective's threshold must be a bucket edge of the request histogram
    (OpenTelemetry's boundaries plus KEEL_SLO_LATENCY_SECONDS): any other is refused.
    Check the output with `promtool check rules` and `promtool test rules`.
    """
    try:
        files = slo_rule_files(_settings(file))
    except KeelError as error:
        fail(error.detail)
    rules_path, tests_path = write_rules(files, output_dir)
    if as_json:
        print_json(
            {
                "rules": str(rules_path),
                "tests": str(tests_path),
                "rules_hash": files.rules_hash,
                "objectives": objectives_json(files.objectives),
            }
        )
        return
    table = Table("SLO", "kind", "target", "period", "threshold (s)")
    for objective in files.objectives:
        threshold = objective.threshold_seconds
        table.add_row(
            objective.name,
            objective.kind,
            str(objective.target),
            objective.period,
            "-" if threshold is None else f"{threshold:g}",
        )
    out.print(table)
    out.print(f"wrote {rules_path} and {tests_path} (rules sha256 {files.rules_hash})")


@app.command("dashboard")
def dashboard_command(
    file: Path | None = typer.Option(
        None, "--file", help="The SLO file (default: KEEL_SLO_FILE, else the one Keel ships)."
    ),
    output_dir: Path = typer.Option(
        Path("deploy/grafana"), "--output-dir", help="Where to write keel-dashboard.json."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write the Grafana dashboard: error budget and burn rates per SLO, then operations.

    The SLO panels use the recording rules `keel slo rules` writes (load both into the
    same Prometheus); the rest reads the metric families the README documents.
    """
    settings = Settings()
    slo_file = file if file is not None else settings.slo_file
    histogram = request_histogram(settings.slo_latency_seconds)
    try:
        objectives = load_objectives(slo_file, histogram)
    except KeelError as error:
        fail(error.detail)
    path = write_dashboard(render_dashboard(objectives, histogram), output_dir)
    if as_json:
        print_json({"dashboard": str(path), "slos": [o.name for o in objectives]})
        return
    out.print(f"wrote {path} ({len(objectives)} SLOs)")


@app.command("report")
def report_command(file: Path | None = FileOption, as_json: bool = JsonOption) -> None:
    """Remaining error budget and burn rate per window of every SLO, from the per-minute
    rollups in Keel's database (no Prometheus needed), and which alerts would fire.

    The windows are the alert rules' (5m, 30m, 1h, 6h, 3d) and the SLO's period.
    """
    settings = _settings(file)
    try:
        objectives = slo_rule_files(settings).objectives
    except KeelError as error:
        fail(error.detail)

    async def read() -> list[SLOReport]:
        async with database(settings) as db:
            return await read_reports(db, objectives, SYSTEM_CLOCK.now())

    reports = run(read)
    if as_json:
        print_json({"slos": [report.as_json() for report in reports]})
        return
    for report in reports:
        _print_report(report)


def _percent(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _print_report(report: SLOReport) -> None:
    objective = report.objective
    out.print(
        f"[bold]{objective.name}[/bold] ({objective.kind}, target {objective.target} over "
        f"{objective.period}): {_percent(report.budget_remaining, 1)} of the error budget left",
        highlight=False,
    )
    table = Table("window", "requests", "bad", "error ratio", "burn rate")
    for reading in report.windows:
        rate = reading.burn_rate
        table.add_row(
            reading.window,
            str(reading.total),
            str(reading.total - reading.good),
            _percent(reading.error_ratio),
            "-" if rate is None else f"{rate:.2f}x",
        )
    out.print(table)
    alerts = Table("alert", "severity", "windows", "burn rate over", "would fire")
    for alert in report.alerts:
        alerts.add_row(
            alert.name,
            alert.severity,
            f"{alert.long.window} and {alert.short.window}",
            f"{alert.burn_rate:g}x",
            "[red]FIRING[/red]" if alert.firing else "no",
        )
    out.print(alerts)

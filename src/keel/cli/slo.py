"""``keel slo``: Prometheus rules for the SLOs, the promtool tests that prove them, a dashboard."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from keel.cli._common import JsonOption, fail, out, print_json
from keel.errors import KeelError
from keel.observe.metrics import request_histogram
from keel.observe.version import slo_rule_files
from keel.settings import Settings
from keel.slo import objectives_json, write_rules
from keel.slo.dashboard import render_dashboard, write_dashboard
from keel.slo.spec import load_objectives

app = typer.Typer(
    help="Service level objectives: Prometheus rules and alerts.", no_args_is_help=True
)


@app.command("rules")
def rules_command(
    file: Path | None = typer.Option(
        None, "--file", help="The SLO file (default: KEEL_SLO_FILE, else the one Keel ships)."
    ),
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
    settings = Settings()
    if file is not None:
        settings = settings.model_copy(update={"slo_file": file})
    try:
        files = slo_rule_files(settings)
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

"""``keel parity URL_A URL_B``: list what differs between two environments, fail on drift."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from keel.cli._common import JsonOption, err, fail, out, print_json
from keel.errors import KeelError
from keel.parity import ParityReport, parity

# Exit statuses: 0 within the threshold, 1 above it, 2 when an environment cannot be read.
UNREADABLE = 2


def parity_command(
    url_a: str = typer.Argument(..., help="Base URL of the first environment."),
    url_b: str = typer.Argument(..., help="Base URL of the second environment."),
    threshold: float = typer.Option(
        5.0, "--threshold", min=0, max=100, help="Fail above this divergence (percent)."
    ),
    ignore: list[str] = typer.Option(
        [], "--ignore", help="An item to leave out, e.g. setting:database_url (repeatable)."
    ),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds per request."),
    as_json: bool = JsonOption,
) -> None:
    """Compare /version and /health of two environments: version, schema, settings
    (keyed fingerprints, never values), dependency types, limit policy and SLO rules.

    Exits 1 when the share of differing items is above --threshold, 2 when an
    environment cannot be read.
    """
    try:
        report = asyncio.run(parity(url_a, url_b, ignore=ignore, request_seconds=timeout))
    except KeelError as error:
        fail(error.detail, UNREADABLE)
    if as_json:
        print_json({**report.as_json(), "threshold_percent": threshold})
    else:
        _print(report, url_a, url_b, threshold)
    if report.exceeds(threshold):
        raise typer.Exit(1)


def _print(report: ParityReport, url_a: str, url_b: str, threshold: float) -> None:
    if report.differences:
        table = Table("item", f"A {url_a}", f"B {url_b}")
        for difference in report.differences:
            table.add_row(difference.item, difference.a or "(absent)", difference.b or "(absent)")
        out.print(table)
    for note in report.notes:
        err.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    verdict = "[red]above[/red]" if report.exceeds(threshold) else "within"
    out.print(
        f"{len(report.differences)} of {report.compared} items differ: divergence "
        f"{report.divergence_percent:.1f} % ({verdict} the {threshold:g} % threshold)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("parity")(parity_command)

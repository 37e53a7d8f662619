"""``keel synthetic run``: the synthetic check's steps against a running Keel."""

from __future__ import annotations

import typer
from rich.table import Table

from keel.cli._common import JsonOption, fail, out, print_json, run
from keel.settings import Settings
from keel.synthetic import SyntheticRun, run_checks

app = typer.Typer(help="Synthetic checks: a client's journey, marked so SLIs skip it.")


@app.command("run")
def run_command(
    target: str | None = typer.Option(
        None, "--target", help="Base URL of the service (default: KEEL_SYNTHETIC_TARGET_URL)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="KEEL_SYNTHETIC_TOKEN",
        help="An organisation admin's token (only theirs may mark requests synthetic).",
        show_envvar=True,
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        min=0.1,
        help="Seconds per request (default: KEEL_SYNTHETIC_TIMEOUT_SECONDS).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check /health, create a recognition with an Idempotency-Key, replay it, read it
    back, request an export, and delete the recognition again.

    Every request carries Keel-Synthetic: 1, so the SLO metrics and rollups leave it
    out. Exits 1 when a step fails (without a token only /health is checked, and the
    other steps fail as skipped).
    """
    settings = Settings()
    url = target or settings.synthetic_target_url
    if not url:
        fail("give --target URL (or set KEEL_SYNTHETIC_TARGET_URL)", 2)
    seconds = timeout or settings.synthetic_timeout_seconds
    result = run(lambda: run_checks(url, token, timeout_seconds=seconds))
    if as_json:
        print_json(result.as_json())
    else:
        _print(result)
    if not result.ok:
        raise typer.Exit(1)


def _print(result: SyntheticRun) -> None:
    table = Table("step", "result", "ms", "detail")
    for step in result.steps:
        table.add_row(
            step.step,
            "[green]ok[/green]" if step.ok else "[red]failed[/red]",
            f"{step.seconds * 1000:.1f}",
            step.detail or "",
        )
    out.print(table)
    verdict = "passed" if result.ok else "[red]failed[/red]"
    out.print(f"synthetic check against {result.target}: {verdict}", highlight=False)

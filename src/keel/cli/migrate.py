"""``keel migrate``: the safe migration runner (``keel.migrations``) from the shell.

``plan``, ``lint``, ``dry-run``, ``apply``, ``rollback``, ``restore``, ``status`` and
``new`` are the operator's commands. ``upgrade``, ``downgrade`` and ``current``
remain as the raw Alembic wrappers they always were (no lock, no backup, no
history): kept for scripts that call them, not for production.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.syntax import Syntax
from rich.table import Table

from keel import migrations
from keel.cli._common import JsonOption, database, err, fail, out, print_json, run
from keel.clock import SystemClock
from keel.migrations import Kind, RunnerOptions
from keel.migrations.runtime.auditing import record_steps
from keel.migrations.runtime.history import Step
from keel.redaction import mask_url
from keel.settings import Profile, Settings

app = typer.Typer(
    help="Plan, lint, dry-run, apply and undo schema migrations.", no_args_is_help=True
)

TargetOption = typer.Option("heads", "--target", help="Revision to reach (default: head).")
NoBackupOption = typer.Option(False, "--no-backup", help="Skip the backup (KEEL_ENV=dev only).")


class BarProgress:
    """A Rich progress bar over revisions, on stderr."""

    def __init__(self) -> None:
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def start(self, total: int, description: str) -> None:
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[revision]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, revision="")

    def advance(self, revision: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, revision=revision)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _options(settings: Settings, steps: list[Step] | None = None) -> RunnerOptions:
    """The one place the CLI's runs are configured; ``steps`` collects them for the audit log."""
    if steps is None:
        return RunnerOptions.from_settings(settings)
    return RunnerOptions.from_settings(settings, listeners=(steps.append,))


def _run_audited(
    settings: Settings,
    change: Callable[[RunnerOptions], Awaitable[migrations.RunResult]],
) -> migrations.RunResult:
    """Run a schema change; its steps reach the audit log whether it succeeds or fails."""

    async def go() -> migrations.RunResult:
        steps: list[Step] = []
        try:
            return await change(_options(settings, steps))
        finally:
            await record_steps(settings, steps)

    return run(go)


def _backup_allowed(settings: Settings, no_backup: bool) -> bool:
    if no_backup and settings.env is not Profile.DEV:
        fail(f"--no-backup is refused with KEEL_ENV={settings.env.value}: only dev may skip it")
    return not no_backup


def _print_run(result: migrations.RunResult, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    for step in result.steps:
        out.print(
            f"{step.action.value:9} {step.revision or '-':8} {step.outcome.value:11} "
            f"{step.duration_seconds:.3f}s",
            highlight=False,
        )
    if result.backup_file:
        out.print(f"backup: {result.backup_file}", highlight=False)
    moved = result.start_revision != result.end_revision
    state = f"{result.start_revision or 'base'} -> {result.end_revision or 'base'}"
    out.print(
        f"schema {state}" if moved else f"nothing to do; schema at {state.split(maxsplit=1)[0]}"
    )


@app.command()
def plan(target: str = TargetOption, as_json: bool = JsonOption) -> None:
    """Show pending revisions, their PostgreSQL SQL and a risk summary."""
    settings = Settings()

    async def go() -> migrations.Plan:
        async with database(settings) as db:
            current = await migrations.current_revision(db)
        return migrations.plan(current, timeouts=_options(settings).timeouts, target=target)

    result = run(go)
    if as_json:
        print_json(result.as_dict())
        return
    out.print(f"current: {result.current or 'base'}  head: {result.head}", highlight=False)
    if not result.revisions:
        out.print("nothing pending")
    for item in result.revisions:
        out.rule(f"{item.revision} ({item.kind.value}) {item.message.splitlines()[0]}")
        out.print(Syntax(item.sql.strip(), "sql", word_wrap=True))
        for note in item.locks:
            out.print(f"  lock  {note.table}: {note.lock}", highlight=False)
        for finding in item.risks:
            out.print(f"  [red]risk[/red]  {finding.rule}: {finding.message}", highlight=False)
        for finding in item.excused:
            out.print(f"  [dim]allowed {finding.rule}[/dim]", highlight=False)
    for remark in result.notes:
        err.print(f"note: {remark}", highlight=False)


@app.command()
def lint(
    against_database: bool = typer.Option(
        False, "--against-database", help="Also compare checksums with the configured database."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Lint every revision with squawk and Keel's own checks; exit 1 on any finding."""
    settings = Settings()

    async def recorded() -> dict[str, str]:
        found = await migrations.status(settings.database_url, options=_options(settings))
        return {item.revision: item.recorded for item in found.checksums if item.recorded}

    checksums = run(recorded) if against_database else None
    try:
        report = migrations.lint(timeouts=_options(settings).timeouts, applied_checksums=checksums)
    except migrations.MigrationError as error:
        fail(error.detail)
    if as_json:
        print_json(report.as_dict())
    else:
        for item in report.revisions:
            mark = "[green]ok[/green]" if item.ok else "[red]FAIL[/red]"
            out.print(f"{mark} {item.revision.revision} ({item.kind.value})")
            for finding in item.findings:
                where = f":{finding.line}" if finding.line else ""
                out.print(f"   {finding.rule}{where}: {finding.message}", highlight=False)
            for exception in item.revision.exceptions:
                if exception.reason:
                    out.print(
                        f"   [dim]allowed {exception.rule}: {exception.reason}[/dim]",
                        highlight=False,
                    )
    if not report.ok:
        raise typer.Exit(1)


@app.command("dry-run")
def dry_run(target: str = TargetOption, as_json: bool = JsonOption) -> None:
    """Apply pending revisions, downgrade, upgrade again, then undo it all; changes nothing."""
    settings = Settings()

    async def go() -> migrations.DryRunReport:
        return await migrations.dry_run(
            settings.database_url, target=target, options=_options(settings)
        )

    report = run(go)
    if as_json:
        print_json(report.as_dict())
        return
    if not report.revisions:
        out.print(f"nothing pending; schema at {report.start_revision or 'base'}")
        return
    for trial in report.revisions:
        out.print(f"{trial.revision}: {trial.seconds:.3f}s", highlight=False)
        for lock in trial.locks:
            out.print(f"   locks {lock}", highlight=False)
    for remark in report.notes:
        out.print(f"[yellow]note:[/yellow] {remark}", highlight=False)
    out.print(
        f"upgrade {report.upgrade_seconds:.3f}s, downgrade {report.downgrade_seconds:.3f}s, "
        f"upgrade again {report.reupgrade_seconds:.3f}s; rolled back, nothing changed",
        highlight=False,
    )


@app.command()
def apply(
    target: str = TargetOption, no_backup: bool = NoBackupOption, as_json: bool = JsonOption
) -> None:
    """Back up, then apply pending revisions under the migration lock, one transaction each."""
    settings = Settings()
    take_backup = _backup_allowed(settings, no_backup)

    async def go(options: RunnerOptions) -> migrations.RunResult:
        return await migrations.apply(
            settings.database_url,
            target=target,
            take_backup=take_backup,
            options=options,
            progress=None if as_json else BarProgress(),
        )

    _print_run(_run_audited(settings, go), as_json)


@app.command()
def rollback(
    to: str = typer.Option(..., "--to", help="Revision to go back to, or base."),
    no_backup: bool = NoBackupOption,
    as_json: bool = JsonOption,
) -> None:
    """Downgrade to --to REV under the migration lock, after a backup."""
    settings = Settings()
    take_backup = _backup_allowed(settings, no_backup)

    async def go(options: RunnerOptions) -> migrations.RunResult:
        return await migrations.rollback(
            settings.database_url,
            to=to,
            take_backup=take_backup,
            options=options,
            progress=None if as_json else BarProgress(),
        )

    _print_run(_run_audited(settings, go), as_json)


@app.command()
def restore(
    backup: Path = typer.Argument(..., help="A backup file written by apply or rollback."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    no_backup: bool = NoBackupOption,
    as_json: bool = JsonOption,
) -> None:
    """Replace the database with BACKUP (asks first; backs up the current state)."""
    settings = Settings()
    take_backup = _backup_allowed(settings, no_backup)
    if not yes:
        typer.confirm(
            f"Replace every table of {mask_url(settings.database_url)} with {backup}?",
            abort=True,
            err=True,
        )

    async def go(options: RunnerOptions) -> migrations.RunResult:
        return await migrations.restore(
            settings.database_url, backup, take_backup=take_backup, options=options
        )

    _print_run(_run_audited(settings, go), as_json)


@app.command()
def status(as_json: bool = JsonOption) -> None:
    """Current revision against head, checksum verification and the last runs."""
    settings = Settings()

    async def go() -> migrations.Status:
        return await migrations.status(settings.database_url, options=_options(settings))

    found = run(go)
    if as_json:
        print_json(found.as_dict())
    else:
        state = "at head" if found.at_head else f"BEHIND ({len(found.pending)} pending)"
        out.print(f"current: {found.current or 'base'}  head: {found.head}  ({state})")
        for item in found.checksums:
            out.print(f"  {item.revision}: checksum {item.state}", highlight=False)
        table = Table("when", "revision", "action", "outcome", "seconds", "who", "backup")
        for step in found.recent:
            table.add_row(
                step.started_at.isoformat(timespec="seconds"),
                step.revision or "-",
                step.action.value,
                step.outcome.value,
                f"{step.duration_seconds:.3f}",
                step.actor,
                step.backup_file or "",
            )
        out.print(table)
    if found.edited:
        raise typer.Exit(1)


@app.command()
def new(
    message: str = typer.Argument(..., help="What the revision does."),
    expand: bool = typer.Option(False, "--expand", help="Additive; may run before a deploy."),
    contract: bool = typer.Option(False, "--contract", help="Removes; runs after a deploy."),
) -> None:
    """Write a new revision from the expand or contract template."""
    if expand == contract:
        fail("choose exactly one of --expand or --contract")
    kind = Kind.EXPAND if expand else Kind.CONTRACT
    path = migrations.new_revision(message, kind, now=SystemClock().now())
    out.print(f"wrote {path}", highlight=False)


# --- the raw Alembic wrappers ----------------------------------------------------


@app.command()
def upgrade(target: str = typer.Argument("head", help="Revision to reach.")) -> None:
    """Raw Alembic upgrade to TARGET (no lock, backup or history: prefer `apply`)."""

    async def go() -> None:
        async with database() as db:
            await migrations.upgrade(db, target)
            out.print(f"schema at {await migrations.current_revision(db)}")

    run(go)


@app.command()
def downgrade(target: str = typer.Argument(..., help="Revision to go back to, or -1.")) -> None:
    """Raw Alembic downgrade to TARGET (no lock, backup or history: prefer `rollback`)."""

    async def go() -> None:
        async with database() as db:
            await migrations.downgrade(db, target)
            out.print(f"schema at {await migrations.current_revision(db) or 'nothing'}")

    run(go)


@app.command()
def current(as_json: bool = JsonOption) -> None:
    """Show the database's revision and the code's head."""

    async def go() -> None:
        async with database() as db:
            revision = await migrations.current_revision(db)
            head = migrations.head_revision(db.url)
        if as_json:
            print_json({"current": revision, "head": head, "at_head": revision == head})
        else:
            state = "at head" if revision == head else "BEHIND"
            out.print(f"current: {revision or 'nothing'}  head: {head}  ({state})")

    run(go)

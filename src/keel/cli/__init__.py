"""The ``keel`` command: thin Typer wrappers over typed functions.

Each sub-command group lives in its own module exposing ``app``; this module
only assembles them. Every command that prints data accepts ``--json``.
"""

from __future__ import annotations

import sys

import typer

from keel.cli import (
    admin,
    audit,
    breakers,
    deploy,
    idempotency,
    jobs,
    limits,
    migrate,
    parity,
    server,
    slo,
    synthetic,
)
from keel.observe.logs import configure_logging, flush_logs
from keel.settings import Settings

app = typer.Typer(
    name="keel",
    help="Keel: a recognitions API with a reliability layer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it per command)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@app.callback()
def _logging(ctx: typer.Context) -> None:
    """Logs go to stderr, so that stdout carries only a command's output (``--json``).

    Lines are written by a writer thread; they are flushed when the command
    ends, while ``sys.stderr`` is still the one it ran with.
    """
    configure_logging(Settings(), stream=_CurrentStderr())  # type: ignore[arg-type]
    ctx.call_on_close(flush_logs)


server.register(app)
app.add_typer(admin.app, name="admin")
app.add_typer(migrate.app, name="migrate")
app.add_typer(limits.app, name="limits")
app.add_typer(idempotency.app, name="idempotency")
app.add_typer(audit.app, name="audit")
jobs.register(app)
app.add_typer(breakers.app, name="breakers")
app.add_typer(slo.app, name="slo")
app.add_typer(synthetic.app, name="synthetic")
parity.register(app)
app.add_typer(deploy.app, name="deploy")


def main() -> None:
    app()


__all__ = ["app", "main"]

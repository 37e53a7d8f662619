"""``keel serve`` and ``keel version``."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

import typer

from keel import __version__, migrations
from keel.cli._common import JsonOption, database, err, fail, out, print_json
from keel.errors import KeelError
from keel.guard.ratelimit import load_policy
from keel.observe.logs import configure_logging
from keel.observe.metrics_directory import metrics_directory
from keel.serve import run
from keel.settings import Settings


async def prepare_schema(settings: Settings) -> str:
    """On the embedded SQLite default, migrate; elsewhere refuse a schema behind the code.

    The SQLite migration goes through the safe runner: two ``keel serve`` starting
    on one file serialise on its lock, and an existing database is backed up first.
    """
    if settings.is_sqlite:
        await migrations.apply(
            settings.database_url, options=migrations.RunnerOptions.from_settings(settings)
        )
    async with database(settings) as db:
        if not settings.is_sqlite:
            await migrations.require_head(db)
        return await migrations.current_revision(db) or "nothing"


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, min=1, help="Server processes (uvicorn workers)."),
) -> None:
    """Serve the API with uvicorn."""
    settings = Settings()
    try:
        settings.check_startable()
        if settings.ratelimit_policy is not None:
            load_policy(settings.ratelimit_policy)  # a bad file is refused here, naming the line
        revision = asyncio.run(prepare_schema(settings))
    except KeelError as error:
        fail(error.detail)
    err.print(f"schema at {revision}; serving on http://{host}:{port}", highlight=False)
    configure_logging(settings)

    def stopped(_signum: int, _frame: FrameType | None) -> None:
        """uvicorn re-raises the SIGTERM it handled once it is done; by then we exit 0."""

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        with metrics_directory(workers):
            run(settings, host=host, port=port, workers=workers)
    finally:
        signal.signal(signal.SIGTERM, previous)


def version(as_json: bool = JsonOption) -> None:
    """Print Keel's version."""
    settings = Settings()
    if as_json:
        print_json(
            {"version": __version__, "release_id": settings.release_id, "git_sha": settings.git_sha}
        )
    else:
        out.print(f"keel {__version__}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(version)

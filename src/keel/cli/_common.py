"""What every CLI module shares: running coroutines, printing, failing clearly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from keel.db.engine import Database
from keel.errors import KeelError
from keel.settings import Settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print one JSON object instead of text.")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def run(coroutine_function: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; a KeelError becomes a one-line message and exit status 1."""

    async def wrapper() -> T:
        return await coroutine_function()

    try:
        return asyncio.run(wrapper())
    except KeelError as error:
        fail(error.detail)


def print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, default=str, sort_keys=True))


@asynccontextmanager
async def database(settings: Settings | None = None) -> AsyncIterator[Database]:
    settings = settings or Settings()
    db = Database(settings.database_url, timeout=settings.database_timeout_seconds)
    try:
        yield db
    finally:
        await db.dispose()

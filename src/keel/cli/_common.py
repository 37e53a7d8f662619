"""What every CLI module shares: running coroutines, printing, failing clearly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

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


Item = Mapping[str, Any]
Column = str | Callable[[Item], str]


def print_items(
    items: Sequence[Item],
    columns: Mapping[str, Column],
    *,
    as_json: bool,
    empty: str | None = None,
) -> None:
    """A listing: ``{"items": [...]}`` with ``--json``, else a table.

    ``columns`` maps each heading to the item's key (shown as text, ``-`` when
    empty) or to a function that renders the cell, so every listing command
    prints the same way and its JSON keeps every field, not just the shown ones.
    """
    if as_json:
        print_json({"items": list(items)})
        return
    if not items and empty is not None:
        out.print(empty)
        return
    table = Table(*columns)
    for item in items:
        table.add_row(*(_cell(item, column) for column in columns.values()))
    out.print(table)


def _cell(item: Item, column: Column) -> str:
    if callable(column):
        return column(item)
    value = item[column]
    return "-" if value is None or value == "" else str(value)


@asynccontextmanager
async def database(settings: Settings | None = None) -> AsyncIterator[Database]:
    settings = settings or Settings()
    db = Database(settings.database_url, timeout=settings.database_timeout_seconds)
    try:
        yield db
    finally:
        await db.dispose()

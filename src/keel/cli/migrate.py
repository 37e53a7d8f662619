"""``keel migrate``: Alembic, run against the configured database."""

from __future__ import annotations

import typer

from keel.cli._common import JsonOption, database, out, print_json, run
from keel.db import migrate

app = typer.Typer(help="Apply, undo and inspect schema migrations.", no_args_is_help=True)


@app.command()
def upgrade(target: str = typer.Argument("head", help="Revision to reach.")) -> None:
    """Apply migrations up to TARGET (default: head)."""

    async def go() -> None:
        async with database() as db:
            await migrate.upgrade(db, target)
            out.print(f"schema at {await migrate.current_revision(db)}")

    run(go)


@app.command()
def downgrade(target: str = typer.Argument(..., help="Revision to go back to, or -1.")) -> None:
    """Undo migrations down to TARGET."""

    async def go() -> None:
        async with database() as db:
            await migrate.downgrade(db, target)
            out.print(f"schema at {await migrate.current_revision(db) or 'nothing'}")

    run(go)


@app.command()
def current(as_json: bool = JsonOption) -> None:
    """Show the database's revision and the code's head."""

    async def go() -> None:
        async with database() as db:
            revision = await migrate.current_revision(db)
            head = migrate.head_revision(db.url)
        if as_json:
            print_json({"current": revision, "head": head, "at_head": revision == head})
        else:
            state = "at head" if revision == head else "BEHIND"
            out.print(f"current: {revision or 'nothing'}  head: {head}  ({state})")

    run(go)

"""``keel idempotency``: housekeeping of stored idempotency keys."""

from __future__ import annotations

import typer

from keel.cli._common import JsonOption, database, out, print_json, run
from keel.clock import SYSTEM_CLOCK
from keel.guard.idempotency import purge_expired

app = typer.Typer(help="Idempotency keys: purge the expired ones.", no_args_is_help=True)


@app.command()
def purge(as_json: bool = JsonOption) -> None:
    """Delete keys past their retention (KEEL_IDEMPOTENCY_RETENTION_SECONDS) and dead claims."""

    async def go() -> int:
        async with database() as db:
            return await purge_expired(db, SYSTEM_CLOCK.now())

    count = run(go)
    print_json({"purged": count}) if as_json else out.print(f"purged {count} expired keys")

"""``keel breakers``: see and steer the circuit breakers of every running server.

The CLI holds no breakers of its own: it reads and writes the shared breaker state store
(``KEEL_BREAKER_STORE_URL``, else ``KEEL_REDIS_URL``). Servers adopt an operator's record
within their sync interval (``KEEL_BREAKER_SYNC_SECONDS``, 1 s by default), because it
is newer than anything they hold. With no shared store (``memory://``) each server's
breakers live in its own memory, out of any other process's reach: the commands say so
and exit 1 rather than pretend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.table import Table

from keel.cli._common import JsonOption, fail, out, print_json, run
from keel.clock import SYSTEM_CLOCK
from keel.resilience import (
    BreakerRecord,
    BreakerStateStore,
    force_closed_breaker,
    force_open_breaker,
    list_breakers,
    reset_breaker,
)
from keel.resilience.wiring import breaker_store, breaker_store_url
from keel.settings import Settings

app = typer.Typer(help="List circuit breakers and force them open or closed.", no_args_is_help=True)

AllowUnknownOption = typer.Option(
    False,
    "--allow-unknown",
    help="Act on a name no server has published yet (servers publish at start-up).",
)

T = TypeVar("T")
Action = Callable[..., Awaitable[BreakerRecord]]


def _shared_store(settings: Settings) -> BreakerStateStore:
    if breaker_store_url(settings).startswith("memory"):
        fail(
            "no shared breaker store: set KEEL_REDIS_URL (or KEEL_BREAKER_STORE_URL) to the "
            "Redis the servers use; without one, each server's breakers live in its memory"
        )
    return breaker_store(settings)


def record_json(record: BreakerRecord) -> dict[str, str]:
    return {
        "name": record.name,
        "state": record.state.value,
        "changed_at": record.changed_at.isoformat(),
        "reason": record.reason.value,
        "origin": record.origin,
    }


async def _with_store(work: Callable[[BreakerStateStore], Awaitable[T]]) -> T:
    store = _shared_store(Settings())
    try:
        return await work(store)
    finally:
        await store.aclose()


@app.command("list")
def list_command(as_json: bool = JsonOption) -> None:
    """Every breaker any server has published, with its shared state."""
    records = run(lambda: _with_store(list_breakers))
    if as_json:
        print_json({"breakers": [record_json(record) for record in records]})
        return
    if not records:
        out.print("no circuit breakers published yet (servers publish theirs at start-up)")
        return
    table = Table("name", "state", "since (UTC)", "reason", "set by")
    for record in records:
        style = {"open": "red", "forced_open": "bold red", "half_open": "yellow"}.get(
            record.state.value, ""
        )
        table.add_row(
            record.name,
            f"[{style}]{record.state.value}[/{style}]" if style else record.state.value,
            record.changed_at.strftime("%Y-%m-%d %H:%M:%S"),
            record.reason.value,
            record.origin,
        )
    out.print(table)


def _act(action: Action, name: str, allow_unknown: bool, as_json: bool) -> None:
    record = run(
        lambda: _with_store(
            lambda store: action(store, name, clock=SYSTEM_CLOCK, allow_unknown=allow_unknown)
        )
    )
    if as_json:
        print_json(record_json(record))
    else:
        out.print(
            f"breaker {record.name} is now {record.state.value} "
            "(servers adopt it within their sync interval)",
            highlight=False,
        )


@app.command("force-open")
def force_open(
    name: str, allow_unknown: bool = AllowUnknownOption, as_json: bool = JsonOption
) -> None:
    """Reject every call to the dependency NAME, on every server, until told otherwise."""
    _act(force_open_breaker, name, allow_unknown, as_json)


@app.command("force-closed")
def force_closed(
    name: str, allow_unknown: bool = AllowUnknownOption, as_json: bool = JsonOption
) -> None:
    """Back to normal operation (CLOSED, a fresh window) on every server."""
    _act(force_closed_breaker, name, allow_unknown, as_json)


@app.command("reset")
def reset(name: str, allow_unknown: bool = AllowUnknownOption, as_json: bool = JsonOption) -> None:
    """CLOSED with every server's window cleared, even where it was CLOSED already."""
    _act(reset_breaker, name, allow_unknown, as_json)

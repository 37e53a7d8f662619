"""``keel limits``: per-organisation overrides, breach reports, noisy neighbours."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import typer
from rich.table import Table

from keel.audit import AuditEvent, EventCode, build_auditor
from keel.cli._common import JsonOption, database, out, print_items, print_json, run
from keel.guard.breaches import top_offenders
from keel.guard.noisy_watch import active_flags
from keel.guard.overrides import clear_override, load_overrides, set_override
from keel.guard.ratelimit import Policy, policy_from
from keel.settings import Settings

app = typer.Typer(
    help="Rate limits and quotas: overrides, breaches, noisy neighbours.", no_args_is_help=True
)

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise typer.BadParameter("use a number and a unit: 30m, 1h, 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _policy(settings: Settings) -> Policy:
    return policy_from(settings.ratelimit_policy)


@app.command("set-override")
def set_override_command(
    org: str = typer.Argument(..., help="Organisation id."),
    name: str = typer.Argument(..., help="Limit name from the policy, or storage-bytes."),
    value: int = typer.Argument(..., help="The organisation's number; 0 lifts the limit."),
    actor: str = typer.Option("cli", "--by", help="Who is making the change (recorded)."),
    as_json: bool = JsonOption,
) -> None:
    """Give one organisation its own number for a limit (running servers pick it up within 15 s)."""
    settings = Settings()

    async def go() -> None:
        async with database(settings) as db, db.write() as session:
            await set_override(session, _policy(settings), org, name, value, set_by=actor)
            event = AuditEvent(
                EventCode.LIMIT_OVERRIDE_SET,
                org_id=org,
                fields={"limit": name, "value": value, "via": f"cli:{actor}"},
            )
            await build_auditor(settings, db).record(session, event)

    run(go)
    result = {"org_id": org, "limit": name, "value": value}
    print_json(result) if as_json else out.print(f"override set: {json.dumps(result)}")


@app.command("clear-override")
def clear_override_command(org: str, name: str, as_json: bool = JsonOption) -> None:
    """Remove an organisation's override so the plan's number applies again."""

    settings = Settings()

    async def go() -> bool:
        async with database(settings) as db, db.write() as session:
            removed = await clear_override(session, org, name)
            if removed:
                event = AuditEvent(
                    EventCode.LIMIT_OVERRIDE_SET,
                    org_id=org,
                    fields={"limit": name, "value": None, "via": "cli"},
                )
                await build_auditor(settings, db).record(session, event)
            return removed

    removed = run(go)
    print_json({"org_id": org, "limit": name, "removed": removed}) if as_json else out.print(
        "removed" if removed else "there was no such override"
    )


@app.command("overrides")
def list_overrides(as_json: bool = JsonOption) -> None:
    """List every organisation's overrides."""

    async def go() -> dict[str, dict[str, int]]:
        async with database() as db:
            return await load_overrides(db)

    table_data = run(go)
    if as_json:
        print_json({"items": table_data})
        return
    table = Table("org_id", "limit", "value")
    for org_id, values in table_data.items():
        for name, value in values.items():
            table.add_row(org_id, name, str(value))
    out.print(table)


@app.command("breaches")
def breaches(
    since: str = typer.Option("1h", help="How far back: 30m, 1h, 7d."),
    top: int = typer.Option(20, help="How many offenders."),
    as_json: bool = JsonOption,
) -> None:
    """Top offenders: who was refused most, by limit, organisation, user and IP (hashed)."""
    window = parse_duration(since)

    async def go() -> list[dict[str, object]]:
        async with database() as db:
            rows = await top_offenders(db, since=window, limit=top)
        return [
            {
                "limit": r.limit_name,
                "org_id": r.org_id,
                "user_hash": r.user_hash,
                "ip_hash": r.ip_hash,
                "breaches": r.breaches,
                "last_at": r.last_at.isoformat(),
            }
            for r in rows
        ]

    items = run(go)
    if as_json:
        print_json({"since": since, "items": items})
        return
    table = Table("breaches", "limit", "org_id", "user (hash)", "ip (hash)", "last")
    for item in items:
        table.add_row(
            str(item["breaches"]),
            str(item["limit"]),
            str(item["org_id"] or "-"),
            str(item["user_hash"] or "-")[:16],  # the `user` of log lines
            str(item["ip_hash"] or "-")[:12],
            str(item["last_at"]),
        )
    out.print(table)


@app.command("noisy")
def noisy(as_json: bool = JsonOption) -> None:
    """Organisations flagged as noisy neighbours now."""

    async def go() -> list[dict[str, object]]:
        async with database() as db:
            flags = await active_flags(db)
        return [
            {
                "org_id": f.org_id,
                "reason": f.reason,
                "value": round(f.value, 3),
                "threshold": round(f.threshold, 3),
                "flagged_at": f.flagged_at.isoformat(),
            }
            for f in flags
        ]

    columns = {
        "org_id": "org_id",
        "reason": "reason",
        "value": "value",
        "threshold": "threshold",
        "since": "flagged_at",
    }
    print_items(run(go), columns, as_json=as_json, empty="no organisation is flagged")

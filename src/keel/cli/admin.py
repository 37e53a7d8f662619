"""``keel admin``: organisations, users and tokens."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from keel.cli._common import JsonOption, database, out, print_json, run
from keel.domain import demo, orgs
from keel.domain.tokens import issue_token, revoke_token
from keel.settings import Settings

app = typer.Typer(help="Manage organisations, users and API tokens.", no_args_is_help=True)


def _secret(settings: Settings) -> bytes:
    return settings.secret_key.get_secret_value().encode()


@app.command("create-org")
def create_org(
    name: str,
    plan: str = typer.Option("free", help="free, team or enterprise."),
    timezone: str = typer.Option(
        "UTC", help="IANA time zone; calendar quotas reset at its midnight."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Create an organisation."""

    async def go() -> str:
        async with database() as db, db.write() as session:
            return (await orgs.create_org(session, name, plan=plan, timezone=timezone)).id

    org_id = run(go)
    print_json({"id": org_id}) if as_json else out.print(f"organisation {org_id}")


@app.command("create-user")
def create_user(
    org: str = typer.Option(..., "--org", help="Organisation id."),
    email: str = typer.Option(..., help="The user's email address."),
    role: str = typer.Option("member", help="member or admin."),
    name: str = typer.Option("", help="Display name (defaults to the email's local part)."),
    as_json: bool = JsonOption,
) -> None:
    """Create a user in an organisation."""

    async def go() -> str:
        async with database() as db, db.write() as session:
            user = await orgs.create_user(session, org, email, role=role, display_name=name)
            return user.id

    user_id = run(go)
    print_json({"id": user_id}) if as_json else out.print(f"user {user_id}")


@app.command("create-token")
def create_token(
    user: str = typer.Option(..., "--user", help="User id."),
    name: str = typer.Option("", help="A label to recognise the token by."),
    as_json: bool = JsonOption,
) -> None:
    """Create an API token. It is printed once and never stored in plain."""
    settings = Settings()

    async def go() -> tuple[str, str]:
        async with database(settings) as db, db.write() as session:
            issued = await issue_token(session, _secret(settings), user, name=name)
            return issued.id, issued.token

    token_id, token = run(go)
    if as_json:
        print_json({"id": token_id, "token": token})
    else:
        out.print(f"token id {token_id}\n{token}\n(shown once: store it now)")


@app.command("revoke-token")
def revoke(token_id: str, as_json: bool = JsonOption) -> None:
    """Revoke an API token by its id."""

    async def go() -> None:
        async with database() as db, db.write() as session:
            await revoke_token(session, token_id)

    run(go)
    print_json({"id": token_id, "revoked": True}) if as_json else out.print(f"revoked {token_id}")


@app.command("set-webhook")
def set_webhook(
    org: str,
    url: str = typer.Argument("", help="http(s) URL to POST notifications to; empty clears it."),
    as_json: bool = JsonOption,
) -> None:
    """Set (or clear) the webhook an organisation's notifications are POSTed to."""

    async def go() -> None:
        async with database() as db, db.write() as session:
            await orgs.set_webhook(session, org, url or None)

    run(go)
    if as_json:
        print_json({"id": org, "webhook_url": url or None})
    else:
        out.print(f"webhook of {org}: {url or '(none)'}")


@app.command("list-orgs")
def list_orgs(as_json: bool = JsonOption) -> None:
    """List organisations."""

    async def go() -> list[dict[str, str]]:
        async with database() as db, db.read() as session:
            rows = await orgs.list_orgs(session)
            return [
                {"id": o.id, "name": o.name, "plan": o.plan, "timezone": o.timezone} for o in rows
            ]

    items = run(go)
    if as_json:
        print_json({"items": items})
        return
    table = Table("id", "name", "plan", "timezone")
    for item in items:
        table.add_row(item["id"], item["name"], item["plan"], item["timezone"])
    out.print(table)


@app.command("list-users")
def list_users(
    org: str | None = typer.Option(None, "--org", help="Only this organisation's users."),
    as_json: bool = JsonOption,
) -> None:
    """List users."""

    async def go() -> list[dict[str, str]]:
        async with database() as db, db.read() as session:
            rows = await orgs.list_users(session, org)
            return [
                {"id": u.id, "org_id": u.org_id, "email": u.email, "role": u.role} for u in rows
            ]

    items = run(go)
    if as_json:
        print_json({"items": items})
        return
    table = Table("id", "org_id", "email", "role")
    for item in items:
        table.add_row(item["id"], item["org_id"], item["email"], item["role"])
    out.print(table)


@app.command("seed-demo")
def seed_demo(
    tokens_file: Path = typer.Option(
        Path("./keel-data/demo-tokens.json"), help="Where the demo tokens are kept (dev only)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Create the demo organisation with two users (idempotent) and print their tokens."""
    settings = Settings()

    async def go() -> demo.Demo:
        async with database(settings) as db:
            return await demo.seed_demo(db, _secret(settings), tokens_file)

    result = run(go)
    if as_json:
        print_json(demo.as_dict(result))
        return
    verb = "created" if result.created else "already there"
    out.print(f"demo organisation {result.org_id} ({verb})")
    for user in result.users:
        out.print(f"  {user.role:<7} {user.email:<24} id={user.id}")
        out.print(f"          token: {user.token or '(not saved; use keel admin create-token)'}")
    giver, recipient = result.users[0], result.users[1]
    if giver.token:
        out.print("\nTry it (the server listens on 127.0.0.1:8000):", highlight=False)
        out.print(curl_example(giver.token, recipient.id), highlight=False, soft_wrap=True)


def curl_example(token: str, recipient_id: str, base: str = "http://127.0.0.1:8000") -> str:
    body = f'{{"recipient_id": "{recipient_id}", "message": "Thanks for the review!"}}'
    return (
        f"curl -sS -X POST {base}/v1/recognitions \\\n"
        f"  -H 'Authorization: Bearer {token}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f'  -H "Idempotency-Key: $(uuidgen 2>/dev/null || date +%s%N)" \\\n'
        f"  -d '{body}'"
    )

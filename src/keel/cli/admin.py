"""``keel admin``: organisations, users and tokens, and the operator console's token."""

from __future__ import annotations

from pathlib import Path

import typer

from keel.audit import AuditEvent, EventCode, build_auditor
from keel.cli._common import JsonOption, database, out, print_items, print_json, run
from keel.console.access import new_token
from keel.db.tables import ApiToken
from keel.domain import demo, orgs
from keel.domain.tokens import issue_token, revoke_token
from keel.errors import NotFound
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

    settings = Settings()

    async def go() -> str:
        async with database(settings) as db, db.write() as session:
            org = await orgs.create_org(session, name, plan=plan, timezone=timezone)
            fields = {"plan": org.plan, "timezone": org.timezone, "via": "cli"}
            event = AuditEvent(EventCode.ORG_CREATED, org_id=org.id, fields=fields)
            await build_auditor(settings, db).record(session, event)
            return org.id

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

    settings = Settings()

    async def go() -> str:
        async with database(settings) as db, db.write() as session:
            user = await orgs.create_user(session, org, email, role=role, display_name=name)
            event = AuditEvent(
                EventCode.USER_CREATED,
                org_id=user.org_id,
                subject_id=user.id,
                fields={"role": user.role, "via": "cli"},
            )
            await build_auditor(settings, db).record(session, event)
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
            token_row = await session.get(ApiToken, issued.id)
            event = AuditEvent(
                EventCode.TOKEN_CREATED,
                org_id=token_row.org_id if token_row else None,
                subject_id=issued.user_id,
                token_id=issued.id,
                fields={"via": "cli"},
            )
            await build_auditor(settings, db).record(session, event)
            return issued.id, issued.token

    token_id, token = run(go)
    if as_json:
        print_json({"id": token_id, "token": token})
    else:
        out.print(f"token id {token_id}\n{token}\n(shown once: store it now)")


@app.command("ops-token")
def ops_token(as_json: bool = JsonOption) -> None:
    """Make a new operator token for the console (/ops) and the hash to configure.

    Keel keeps only the hash: set KEEL_OPS_TOKEN_SHA256 to it on every process and
    give the token to the operators. A new token replaces the old one when the
    setting changes.
    """
    token, digest = new_token()
    if as_json:
        print_json({"token": token, "sha256": digest})
        return
    out.print(f"{token}\n(shown once: store it now)\nKEEL_OPS_TOKEN_SHA256={digest}")


@app.command("revoke-token")
def revoke(token_id: str, as_json: bool = JsonOption) -> None:
    """Revoke an API token by its id."""

    settings = Settings()

    async def go() -> None:
        async with database(settings) as db, db.write() as session:
            await revoke_token(session, token_id)
            token = await session.get(ApiToken, token_id)
            if token is None:  # pragma: no cover - revoke_token raised already
                raise NotFound(f"no token {token_id}")
            event = AuditEvent(
                EventCode.TOKEN_REVOKED,
                org_id=token.org_id,
                subject_id=token.user_id,
                token_id=token.id,
                fields={"via": "cli"},
            )
            await build_auditor(settings, db).record(session, event)

    run(go)
    print_json({"id": token_id, "revoked": True}) if as_json else out.print(f"revoked {token_id}")


@app.command("set-plan")
def set_plan(
    org: str = typer.Option(..., "--org", help="Organisation id."),
    plan: str = typer.Option(..., help="free, team or enterprise."),
    as_json: bool = JsonOption,
) -> None:
    """Change an organisation's plan (audited as plan.changed)."""
    settings = Settings()

    async def go() -> tuple[str, str]:
        async with database(settings) as db, db.write() as session:
            previous, new = await orgs.set_plan(session, org, plan)
            fields = {"from_plan": previous, "to_plan": new, "via": "cli"}
            event = AuditEvent(EventCode.PLAN_CHANGED, org_id=org, fields=fields)
            await build_auditor(settings, db).record(session, event)
            return previous, new

    previous, new = run(go)
    if as_json:
        print_json({"id": org, "from_plan": previous, "plan": new})
    else:
        out.print(f"organisation {org}: plan {previous} → {new}")


@app.command("set-role")
def set_role(
    user: str = typer.Option(..., "--user", help="User id."),
    role: str = typer.Option(..., help="member or admin."),
    as_json: bool = JsonOption,
) -> None:
    """Change a user's role (audited as user.role_changed)."""
    settings = Settings()

    async def go() -> tuple[str, str]:
        async with database(settings) as db, db.write() as session:
            row, previous = await orgs.set_role(session, user, role)
            event = AuditEvent(
                EventCode.USER_ROLE_CHANGED,
                org_id=row.org_id,
                subject_id=row.id,
                fields={"from_role": previous, "to_role": row.role, "via": "cli"},
            )
            await build_auditor(settings, db).record(session, event)
            return previous, row.role

    previous, new = run(go)
    if as_json:
        print_json({"id": user, "from_role": previous, "role": new})
    else:
        out.print(f"user {user}: role {previous} → {new}")


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

    columns = {"id": "id", "name": "name", "plan": "plan", "timezone": "timezone"}
    print_items(run(go), columns, as_json=as_json)


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

    columns = {"id": "id", "org_id": "org_id", "email": "email", "role": "role"}
    print_items(run(go), columns, as_json=as_json)


@app.command("seed-demo")
def seed_demo(
    tokens_file: Path = typer.Option(
        Path("./keel-data/demo-tokens.json"), help="Where the demo tokens are kept (dev only)."
    ),
    base_url: str = typer.Option(
        "http://127.0.0.1:8000", "--base-url", help="Where the server will listen (for the curl)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Create the demo organisation with two users (idempotent) and print their tokens."""
    settings = Settings()

    async def go() -> demo.Demo:
        async with database(settings) as db:
            return await demo.seed_demo(
                db, _secret(settings), tokens_file, audit=build_auditor(settings, db)
            )

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
        out.print(f"\nTry it (the server listens on {base_url}):", highlight=False)
        example = curl_example(giver.token, recipient.id, base_url)
        out.print(example, highlight=False, soft_wrap=True)


def curl_example(token: str, recipient_id: str, base: str = "http://127.0.0.1:8000") -> str:
    body = f'{{"recipient_id": "{recipient_id}", "message": "Thanks for the review!"}}'
    return (
        f"curl -sS -X POST {base}/v1/recognitions \\\n"
        f"  -H 'Authorization: Bearer {token}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f'  -H "Idempotency-Key: $(uuidgen 2>/dev/null || date +%s%N)" \\\n'
        f"  -d '{body}'"
    )

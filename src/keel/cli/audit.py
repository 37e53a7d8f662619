"""``keel audit``: verify, search, export and seal the audit log; show its public key."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.table import Table

from keel.audit import AuditQuery, PublicKeys, build_auditor, describe, key_ring, signer, stripes
from keel.audit import search as audit_search
from keel.audit.signing import load_public_key, write_private_key
from keel.audit.verify import Report, verify
from keel.cli._common import JsonOption, database, fail, out, print_json, run
from keel.errors import ConfigurationError
from keel.settings import Settings

app = typer.Typer(
    help="Verify, search and export the tamper-evident audit log.", no_args_is_help=True
)

OrgOption = typer.Option(None, "--org", help="Only this organisation's chain (its raw id).")


def parse_time(value: str | None, name: str) -> datetime | None:
    """ISO 8601; a time without an offset is taken as UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--{name} must be an ISO 8601 date or time, e.g. 2026-11-29T03:00:00Z")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _query(
    org: str | None,
    codes: list[str] | None,
    user: str | None,
    system: bool,
    since: str | None,
    until: str | None,
) -> AuditQuery:
    return AuditQuery(
        org_id=org,
        system=system,
        codes=tuple(codes or ()),
        user_id=user,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
    )


def _public_keys(settings: Settings, paths: list[Path] | None) -> PublicKeys:
    if not paths:
        return PublicKeys([signer(settings).public_key])
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as error:
            raise ConfigurationError(f"cannot read {path}") from error
    return PublicKeys(keys)


async def verify_log(
    settings: Settings, org: str | None = None, public_keys: list[Path] | None = None
) -> Report:
    """What ``keel audit verify`` runs; tests call it directly."""
    keys = _public_keys(settings, public_keys)
    async with database(settings) as db:
        candidates = stripes.every_chain(key_ring(settings), org) if org else None
        return await verify(db, keys, candidates=candidates)


@app.command("verify")
def verify_command(
    org: str | None = OrgOption,
    public_key: list[Path] | None = typer.Option(
        None,
        "--public-key",
        help="Trust these PEM public keys (repeatable) instead of this service's own key.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Walk the hash chains and signed digests; report the first broken link (exit 1)."""
    settings = Settings()
    report = run(lambda: verify_log(settings, org, public_key))
    if as_json:
        print_json(report.as_dict())
    elif report.broken is None:
        out.print(
            f"ok: {report.chains} chain(s), {report.events} event(s), "
            f"{report.digests} signed digest(s) verified",
            highlight=False,
        )
    else:
        broken = report.broken
        out.print(
            f"[red]BROKEN[/red] chain {broken.chain_id} at seq {broken.seq}: "
            f"{broken.kind.value} — {broken.detail}",
            highlight=False,
        )
    if report.broken is not None:
        raise typer.Exit(1)


CodeOption = typer.Option(None, "--code", help="Only these event codes (repeatable).")
UserOption = typer.Option(None, "--user", help="Events by or about this user (raw id).")
SystemOption = typer.Option(False, "--system", help="Only the system chain.")
SinceOption = typer.Option(None, "--since", help="From this time (ISO 8601, inclusive).")
UntilOption = typer.Option(None, "--until", help="Before this time (ISO 8601, exclusive).")


@app.command("search")
def search_command(
    code: list[str] | None = CodeOption,
    org: str | None = OrgOption,
    user: str | None = UserOption,
    system: bool = SystemOption,
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    limit: int = typer.Option(100, min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Find events, newest first (a table, or JSON lines with --json)."""
    settings = Settings()
    query = _query(org, code, user, system, since, until)

    async def go() -> list[dict[str, object]]:
        async with database(settings) as db:
            rows, _more = await audit_search.page(db, key_ring(settings), query, limit=limit)
            return [audit_search.as_dict(row) for row in rows]

    items = run(go)
    if as_json:
        for item in items:
            typer.echo(json.dumps(item, sort_keys=True, ensure_ascii=False))
        return
    table = Table("occurred_at")
    table.add_column("code", no_wrap=True)
    for name in ("chain", "seq", "actor", "subject", "fields"):
        table.add_column(name)
    for item in items:
        table.add_row(
            str(item["occurred_at"]),
            str(item["code"]),
            str(item["chain_id"])[:14],
            str(item["seq"]),
            str(item["actor"] or "")[:14],
            str(item["subject"] or "")[:14],
            json.dumps(item["fields"], sort_keys=True),
        )
    out.print(table)


@app.command("export")
def export_command(
    code: list[str] | None = CodeOption,
    org: str | None = OrgOption,
    user: str | None = UserOption,
    system: bool = SystemOption,
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
) -> None:
    """Export events as JSON lines, in chain order, with their hashes."""
    settings = Settings()
    query = _query(org, code, user, system, since, until)

    async def go() -> int:
        count = 0
        handle = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            async with database(settings) as db:
                async for line in audit_search.export(db, key_ring(settings), query):
                    handle.write(line + "\n")
                    count += 1
        finally:
            if output:
                handle.close()
        return count

    count = run(go)
    if output:
        out.print(f"{count} event(s) written to {output}", highlight=False)


@app.command("digest")
def digest_command(org: str | None = OrgOption, as_json: bool = JsonOption) -> None:
    """Sign every chain's (or one organisation's) events since its last digest now."""
    settings = Settings()

    async def go() -> list[dict[str, object]]:
        async with database(settings) as db:
            auditor = build_auditor(settings, db)
            if org is None:
                digests = await auditor.seal_all()
            else:
                digests = []
                async with db.read() as session:
                    chain_ids = await auditor.find_chains(session, org)
                for chain_id in chain_ids:
                    async with db.write() as session:
                        digest = await auditor.seal(session, chain_id)
                    if digest is not None:
                        digests.append(digest)
            return [
                {
                    "id": d.id,
                    "chain_id": d.chain_id,
                    "first_seq": d.first_seq,
                    "last_seq": d.last_seq,
                    "signing_key_id": d.signing_key_id,
                }
                for d in digests
            ]

    items = run(go)
    if as_json:
        print_json({"items": items})
        return
    if not items:
        out.print("nothing to seal: every chain is already covered by a digest")
    for item in items:
        out.print(
            f"sealed {item['chain_id']} seq {item['first_seq']}..{item['last_seq']}",
            highlight=False,
        )


@app.command("public-key")
def public_key_command(as_json: bool = JsonOption) -> None:
    """Print the digest-signing public key (PEM), for auditors to verify with."""
    settings = Settings()
    try:
        key = signer(settings)
    except ConfigurationError as error:
        fail(error.detail)
    if as_json:
        print_json({"key_id": key.key_id, "pem": key.public_pem()})
    else:
        typer.echo(key.public_pem(), nl=False)


@app.command("generate-key")
def generate_key(
    path: Path = typer.Argument(..., help="Where to write the PEM (mode 0600)."),
) -> None:
    """Create a new Ed25519 signing key (for KEEL_AUDIT_SIGNING_KEY_PATH)."""
    try:
        write_private_key(path, Ed25519PrivateKey.generate())
    except FileExistsError:
        fail(f"{path} exists: refusing to overwrite a signing key")
    out.print(f"wrote {path}", highlight=False)


@app.command("codes")
def codes_command(as_json: bool = JsonOption) -> None:
    """The registry of event codes: meaning, identifiers, fields."""
    items = describe()
    if as_json:
        print_json({"items": items})
        return
    table = Table()
    table.add_column("code", no_wrap=True)
    for name in ("meaning", "identifiers", "fields"):
        table.add_column(name)
    for item in items:
        table.add_row(
            str(item["code"]),
            str(item["meaning"]),
            ", ".join(item["identifiers"]),  # type: ignore[arg-type]
            ", ".join(item["fields"]),  # type: ignore[arg-type]
        )
    out.print(table)


__all__ = ["app", "verify_log"]

"""The demo organisation that ``make run`` seeds, idempotently.

Tokens are shown once and stored hashed, so a second run cannot print the
first run's tokens from the database; they are kept in a file beside the data
(mode 0600, dev use only) and read back from there.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from keel.audit import AuditEvent, Auditor, EventCode
from keel.db.engine import Database
from keel.domain import orgs
from keel.domain.principal import Role
from keel.domain.tokens import issue_token

DEMO_ORG = "Demo Org"
DEMO_USERS = (("ada@demo.keel.test", Role.ADMIN), ("grace@demo.keel.test", Role.MEMBER))


@dataclass(frozen=True)
class DemoUser:
    id: str
    email: str
    role: str
    token: str | None


@dataclass(frozen=True)
class Demo:
    org_id: str
    users: list[DemoUser]
    created: bool


async def seed_demo(
    database: Database, secret: bytes, tokens_file: Path, *, audit: Auditor | None = None
) -> Demo:
    async with database.write() as session:
        existing = await orgs.find_org_by_name(session, DEMO_ORG)
        if existing is not None:
            saved = _read_tokens(tokens_file)
            users = [
                DemoUser(id=u.id, email=u.email, role=u.role, token=saved.get(u.id))
                for u in await orgs.list_users(session, existing.id)
            ]
            return Demo(org_id=existing.id, users=users, created=False)
        org = await orgs.create_org(session, DEMO_ORG, plan="team")
        events = [
            AuditEvent(
                EventCode.ORG_CREATED,
                org_id=org.id,
                fields={"plan": org.plan, "timezone": org.timezone, "via": "seed-demo"},
            )
        ]
        users = []
        for email, role in DEMO_USERS:
            user = await orgs.create_user(session, org.id, email, role=role)
            issued = await issue_token(session, secret, user.id, name="demo")
            users.append(DemoUser(id=user.id, email=email, role=role.value, token=issued.token))
            events.append(
                AuditEvent(
                    EventCode.USER_CREATED,
                    org_id=org.id,
                    subject_id=user.id,
                    fields={"role": role.value, "via": "seed-demo"},
                )
            )
            events.append(
                AuditEvent(
                    EventCode.TOKEN_CREATED,
                    org_id=org.id,
                    subject_id=user.id,
                    token_id=issued.id,
                    fields={"via": "seed-demo"},
                )
            )
        if audit is not None:
            for event in events:
                await audit.record(session, event)
    _write_tokens(tokens_file, {u.id: u.token for u in users if u.token})
    return Demo(org_id=org.id, users=users, created=True)


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_tokens(path: Path, tokens: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(tokens, handle)


def as_dict(demo: Demo) -> dict[str, object]:
    return asdict(demo)

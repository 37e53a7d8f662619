"""Organisations and their users: the administrative side, used by ``keel admin``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Row, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables import Org, User
from keel.domain.principal import Plan, Role
from keel.domain.text import check_line
from keel.errors import Conflict, InvalidInput, NotFound
from keel.ids import new_id

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


async def create_org(
    session: AsyncSession,
    name: str,
    *,
    plan: str = Plan.FREE,
    timezone: str = "UTC",
    clock: Clock = SYSTEM_CLOCK,
) -> Org:
    name = check_line(name.strip(), "name")
    if not 1 <= len(name) <= 200:
        raise InvalidInput("organisation name must be 1-200 characters", field="name")
    if plan not in set(Plan):
        raise InvalidInput(f"plan must be one of {', '.join(Plan)}", field="plan")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidInput(f"unknown time zone {timezone!r}", field="timezone") from error
    org = Org(id=new_id(), name=name, plan=plan, timezone=timezone, created_at=clock.now())
    session.add(org)
    await session.flush()
    return org


async def create_user(
    session: AsyncSession,
    org_id: str,
    email: str,
    *,
    role: str = Role.MEMBER,
    display_name: str = "",
    clock: Clock = SYSTEM_CLOCK,
) -> User:
    email = check_line(email.strip().lower(), "email")
    display_name = check_line(display_name, "display_name")
    if not _EMAIL.match(email) or len(email) > 320:
        raise InvalidInput("not an email address", field="email")
    if role not in set(Role):
        raise InvalidInput(f"role must be one of {', '.join(Role)}", field="role")
    if await session.get(Org, org_id) is None:
        raise NotFound(f"no organisation {org_id}")
    user = User(
        id=new_id(),
        org_id=org_id,
        email=email,
        role=role,
        display_name=display_name or email.split("@")[0],
        created_at=clock.now(),
    )
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(f"a user with email {email} already exists") from error
    return user


async def list_orgs(session: AsyncSession) -> Sequence[Org]:
    return (await session.scalars(select(Org).order_by(Org.id))).all()


async def find_org_by_name(session: AsyncSession, name: str) -> Org | None:
    return (await session.scalars(select(Org).where(Org.name == name).limit(1))).first()


async def list_users(
    session: AsyncSession, org_id: str | None = None, *, after: str | None = None, limit: int = 1000
) -> Sequence[User]:
    query = select(User).order_by(User.id).limit(limit)
    if org_id is not None:
        query = query.where(User.org_id == org_id)
    if after is not None:
        query = query.where(User.id > after)
    return (await session.scalars(query)).all()


async def count_users(session: AsyncSession, org_id: str) -> int:
    return int(await session.scalar(select(func.count()).where(User.org_id == org_id)) or 0)


async def user_in_org(database: Database, org_id: str, user_id: str) -> Row[Any]:
    """One user of ``org_id`` as a row with :class:`User`'s columns (``/v1/users/me``):
    a Core SELECT on a bare connection, the request path's cheapest read."""
    rows = await database.rows(
        select(*User.__table__.columns).where(User.id == user_id, User.org_id == org_id)
    )
    if not rows:
        raise NotFound("no such user")
    return rows[0]


async def get_user_in_org(session: AsyncSession, org_id: str, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None or user.org_id != org_id:
        raise NotFound("no such user")
    return user


async def set_plan(session: AsyncSession, org_id: str, plan: str) -> tuple[str, str]:
    """Change an organisation's plan; returns (previous, new)."""
    if plan not in set(Plan):
        raise InvalidInput(f"plan must be one of {', '.join(Plan)}", field="plan")
    org = await session.get(Org, org_id)
    if org is None:
        raise NotFound(f"no organisation {org_id}")
    previous, org.plan = org.plan, plan
    await session.flush()
    return previous, plan


async def set_role(session: AsyncSession, user_id: str, role: str) -> tuple[User, str]:
    """Change a user's role; returns the user and their previous role."""
    if role not in set(Role):
        raise InvalidInput(f"role must be one of {', '.join(Role)}", field="role")
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    previous, user.role = user.role, role
    await session.flush()
    return user, previous


async def set_webhook(session: AsyncSession, org_id: str, url: str | None) -> Org:
    """Where the organisation's notifications are POSTed; ``None`` turns them off."""
    if url is not None:
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or len(url) > 2000:
            raise InvalidInput("webhook URL must be an http(s) URL", field="url")
    org = await session.get(Org, org_id)
    if org is None:
        raise NotFound(f"no organisation {org_id}")
    org.webhook_url = url
    await session.flush()
    return org

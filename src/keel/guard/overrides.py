"""Per-organisation limit overrides set by admins, cached in every server process.

``keel limits set-override ORG NAME VALUE`` writes a row; each process reloads
the table every ``refresh_seconds`` (one small query, off the request path),
so a change reaches every process within that interval without a restart.
A value of 0 lifts the limit for that organisation. The special name
``storage-bytes`` overrides the organisation's storage quota.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import structlog
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from keel.background import BackgroundTask, every
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables import Org
from keel.db.tables_limits import LimitOverrideRow
from keel.errors import InvalidInput, KeelError, NotFound
from keel.guard.ratelimit import LimitOverride, Policy

log = structlog.get_logger(__name__)

STORAGE_LIMIT = "storage-bytes"


def to_override(value: int) -> LimitOverride:
    return LimitOverride(enabled=False) if value == 0 else LimitOverride(limit=value, burst=value)


async def set_override(
    session: AsyncSession,
    policy: Policy,
    org_id: str,
    name: str,
    value: int,
    *,
    set_by: str,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    known = {rule.name for rule in policy.limits} | {STORAGE_LIMIT}
    if name not in known:
        raise InvalidInput(f"unknown limit {name!r}; known: {', '.join(sorted(known))}")
    if value < 0:
        raise InvalidInput("an override is a count of 0 (no limit) or more")
    if await session.get(Org, org_id) is None:
        raise NotFound(f"no organisation {org_id}")
    values = {
        "org_id": org_id,
        "limit_name": name,
        "value": value,
        "set_by": set_by,
        "set_at": clock.now(),
    }
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(LimitOverrideRow).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["org_id", "limit_name"],
        set_={"value": value, "set_by": set_by, "set_at": values["set_at"]},
    )
    await session.execute(statement)


async def clear_override(session: AsyncSession, org_id: str, name: str) -> bool:
    result = await session.execute(
        delete(LimitOverrideRow).where(
            LimitOverrideRow.org_id == org_id, LimitOverrideRow.limit_name == name
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def load_overrides(database: Database) -> dict[str, dict[str, int]]:
    async with database.read() as session:
        rows = await session.execute(
            select(LimitOverrideRow.org_id, LimitOverrideRow.limit_name, LimitOverrideRow.value)
        )
        table: dict[str, dict[str, int]] = {}
        for org_id, name, value in rows:
            table.setdefault(org_id, {})[name] = int(value)
        return table


class OverrideCache:
    def __init__(self, database: Database, policy: Policy, *, refresh_seconds: float = 15.0):
        self._database = database
        self._policy = policy
        self._refresh = refresh_seconds
        self._values: dict[str, dict[str, int]] = {}
        self._refresher = BackgroundTask(
            "overrides", lambda: every(self._refresh, self.reload, "limit_overrides_reload_failed")
        )

    def for_org(self, org_id: str | None) -> Mapping[str, LimitOverride]:
        """The file's overrides for the org, with the database's on top."""
        merged = dict(self._policy.overrides_for(org_id))
        if org_id is not None:
            for name, value in self._values.get(org_id, {}).items():
                if name != STORAGE_LIMIT:
                    merged[name] = to_override(value)
        return merged

    def storage_override(self, org_id: str) -> int | None:
        return self._values.get(org_id, {}).get(STORAGE_LIMIT)

    async def reload(self) -> None:
        self._values = await load_overrides(self._database)

    async def start(self) -> None:
        with contextlib.suppress(KeelError):
            await self.reload()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

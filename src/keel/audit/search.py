"""Reading the audit log: filters, keyset pages, JSON-lines export.

Raw identifiers given to a search (an organisation, a user) are hashed under
every key in the ring, so events recorded before a key rotation are found
too, and so are events on every one of the organisation's chains
(``keel.audit.stripes``). Pages are newest first on the event id (a UUIDv7),
like every other list in the API; each item carries its chain ``seq`` and
hashes so a reader can check links themselves. An export is in chain order:
chain by chain, each in ``seq`` order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select

from keel.audit import stripes
from keel.audit.chain import timestamp
from keel.audit.pseudonym import KeyRing
from keel.audit.recorder import SYSTEM_CHAIN
from keel.audit.registry import EventCode
from keel.db.engine import Database
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.errors import InvalidInput

EXPORT_BATCH = 1000


@dataclass(frozen=True, slots=True)
class AuditQuery:
    org_id: str | None = None  # raw id; None = every chain
    system: bool = False  # only the system chain
    codes: Sequence[str] = ()
    user_id: str | None = None  # raw id; matches actor or subject
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def check(self) -> None:
        for code in self.codes:
            try:
                EventCode(code)
            except ValueError as error:
                raise InvalidInput(f"unknown audit event code {code!r}", field="code") from error
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("since must be before until", field="since")


def _filtered(keys: KeyRing, query: AuditQuery) -> Select[AuditRow]:
    query.check()
    statement: Select[AuditRow] = select(AuditRow)
    if query.system:
        statement = statement.where(AuditRow.chain_id == SYSTEM_CHAIN)
    elif query.org_id is not None:
        statement = statement.where(AuditRow.chain_id.in_(stripes.every_chain(keys, query.org_id)))
    if query.codes:
        statement = statement.where(AuditRow.code.in_(list(query.codes)))
    if query.user_id is not None:
        users = keys.candidates("user", query.user_id)
        statement = statement.where(or_(AuditRow.actor.in_(users), AuditRow.subject.in_(users)))
    if query.since is not None:
        statement = statement.where(AuditRow.occurred_at >= query.since)
    if query.until is not None:
        statement = statement.where(AuditRow.occurred_at < query.until)
    return statement


def as_dict(row: AuditRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "chain_id": row.chain_id,
        "seq": row.seq,
        "occurred_at": timestamp(row.occurred_at),
        "code": row.code,
        "key_id": row.key_id,
        "actor": row.actor,
        "subject": row.subject,
        "token": row.token,
        "ip": row.ip,
        "fields": json.loads(row.fields),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


async def page(
    database: Database,
    keys: KeyRing,
    query: AuditQuery,
    *,
    limit: int,
    before_id: str | None = None,
) -> tuple[list[AuditRow], bool]:
    """Newest first; returns the rows and whether more follow."""
    statement = _filtered(keys, query)
    if before_id is not None:
        statement = statement.where(AuditRow.id < before_id)
    async with database.read() as session:
        rows = list(await session.scalars(statement.order_by(AuditRow.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


async def export(database: Database, keys: KeyRing, query: AuditQuery) -> AsyncIterator[str]:
    """Every matching event as one JSON line, in chain order, streamed in batches."""
    base = _filtered(keys, query)
    after: tuple[str, int] | None = None
    while True:
        statement = base
        if after is not None:
            statement = statement.where(
                or_(
                    AuditRow.chain_id > after[0],
                    (AuditRow.chain_id == after[0]) & (AuditRow.seq > after[1]),
                )
            )
        statement = statement.order_by(AuditRow.chain_id, AuditRow.seq).limit(EXPORT_BATCH)
        async with database.read() as session:
            rows = list(await session.scalars(statement))
        for row in rows:
            yield json.dumps(as_dict(row), sort_keys=True, ensure_ascii=False)
        if len(rows) < EXPORT_BATCH:
            return
        after = (rows[-1].chain_id, rows[-1].seq)

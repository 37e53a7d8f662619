"""Recognitions: one colleague thanking another, with optional evidence."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database, transaction_driver
from keel.db.prepared import PreparedRead, PreparedWrite
from keel.db.tables import Evidence, Recognition, RecognitionEvidence, User
from keel.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from keel.domain.principal import Principal
from keel.errors import Forbidden, InvalidInput, NotFound
from keel.ids import is_valid_id, new_id

MAX_MESSAGE = 2000
MAX_EVIDENCE = 20

# The recognition's INSERT reads its recipient in the same statement: a recipient
# outside the caller's organisation (or none) inserts nothing, and one round trip
# does what a lookup and an insert did. Core, built once: a write's ORM flush
# (unit of work, identity map, instance state) cost more Python than its SQL.
_RECOGNITIONS = cast(Table, Recognition.__table__)
_USERS = cast(Table, User.__table__)
INSERT_FOR_RECIPIENT: ReturningInsert[tuple[int]] = (
    insert(_RECOGNITIONS)
    .from_select(
        ["id", "org_id", "giver_id", "recipient_id", "message", "category", "created_at"],
        select(
            bindparam("id", type_=_RECOGNITIONS.c.id.type),
            _USERS.c.org_id,
            bindparam("giver_id", type_=_RECOGNITIONS.c.giver_id.type),
            _USERS.c.id,
            bindparam("message", type_=_RECOGNITIONS.c.message.type),
            bindparam("category", type_=_RECOGNITIONS.c.category.type),
            bindparam("created_at", type_=_RECOGNITIONS.c.created_at.type),
        ).where(_USERS.c.id == bindparam("recipient_id"), _USERS.c.org_id == bindparam("org_id")),
    )
    .returning(literal_column("1"))
)
# On asyncpg it runs on the write transaction's driver connection, compiled once.
_INSERT_ON_DRIVER = PreparedWrite(INSERT_FOR_RECIPIENT)
LINK_EVIDENCE = insert(cast(Table, RecognitionEvidence.__table__))


@dataclass(frozen=True, slots=True)
class RecognitionRecord:
    id: str
    org_id: str
    giver_id: str
    recipient_id: str
    message: str
    category: str | None
    evidence_ids: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewRecognition:
    recipient_id: str
    message: str
    category: str | None = None
    evidence_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecognitionFilter:
    recipient_id: str | None = None
    giver_id: str | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[RecognitionRecord]
    next_cursor: str | None


def _record(row: Recognition, evidence_ids: list[str]) -> RecognitionRecord:
    return RecognitionRecord(
        id=row.id,
        org_id=row.org_id,
        giver_id=row.giver_id,
        recipient_id=row.recipient_id,
        message=row.message,
        category=row.category,
        evidence_ids=evidence_ids,
        created_at=row.created_at,
    )


async def create(
    session: AsyncSession,
    principal: Principal,
    new: NewRecognition,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> RecognitionRecord:
    message = new.message.strip()
    if not 1 <= len(message) <= MAX_MESSAGE:
        raise InvalidInput(f"message must be 1-{MAX_MESSAGE} characters", field="message")
    if new.recipient_id == principal.user_id:
        raise InvalidInput("you cannot recognise yourself", field="recipient_id")
    evidence_ids = list(dict.fromkeys(new.evidence_ids))
    if len(evidence_ids) > MAX_EVIDENCE:
        raise InvalidInput(f"at most {MAX_EVIDENCE} evidence files", field="evidence_ids")
    record = RecognitionRecord(
        id=new_id(),
        org_id=principal.org_id,
        giver_id=principal.user_id,
        recipient_id=new.recipient_id,
        message=message,
        category=new.category,
        evidence_ids=evidence_ids,
        created_at=clock.now(),
    )
    inserted = None
    if is_valid_id(new.recipient_id):
        params = {
            "id": record.id,
            "org_id": record.org_id,
            "giver_id": record.giver_id,
            "recipient_id": record.recipient_id,
            "message": record.message,
            "category": record.category,
            "created_at": record.created_at,
        }
        inserted = await _insert_for_recipient(session, params)
    if inserted is None:
        # Same answer for "no such user" and "another organisation's user".
        raise InvalidInput("recipient not found in your organisation", field="recipient_id")
    if evidence_ids:
        # After the insert, so a bad recipient is still the refusal reported first;
        # refusing here rolls the recognition back with the transaction.
        found = set(
            await session.scalars(
                select(Evidence.id).where(
                    Evidence.id.in_(evidence_ids),
                    Evidence.org_id == principal.org_id,
                    Evidence.deleted_at.is_(None),
                )
            )
        )
        missing = [eid for eid in evidence_ids if eid not in found]
        if missing:
            raise InvalidInput(
                "evidence not found in your organisation", field="evidence_ids", missing=missing
            )
        await session.execute(
            LINK_EVIDENCE,
            [
                {"recognition_id": record.id, "evidence_id": evidence_id, "position": position}
                for position, evidence_id in enumerate(evidence_ids)
            ],
        )
    return record


async def _insert_for_recipient(session: AsyncSession, params: dict[str, Any]) -> Any:
    """The recognition's INSERT: a row if it was inserted, ``None`` if the recipient is
    not in the organisation. On asyncpg, on the transaction's driver connection."""
    async with transaction_driver(session) as driver:
        if driver is None:
            return (await session.execute(INSERT_FOR_RECIPIENT, params)).first()
        form = _INSERT_ON_DRIVER.for_driver(session.get_bind().dialect)
        return await driver.fetchrow(form.sql, *form.arguments(params))


async def _live(session: AsyncSession, principal: Principal, recognition_id: str) -> Recognition:
    row = await session.get(Recognition, recognition_id) if is_valid_id(recognition_id) else None
    if row is None or row.org_id != principal.org_id or row.deleted_at is not None:
        raise NotFound("no such recognition")
    return row


async def _evidence_ids(session: AsyncSession, ids: list[str]) -> dict[str, list[str]]:
    by_recognition: dict[str, list[str]] = defaultdict(list)
    if not ids:
        return by_recognition
    rows = await session.execute(
        select(RecognitionEvidence.recognition_id, RecognitionEvidence.evidence_id)
        .where(RecognitionEvidence.recognition_id.in_(ids))
        .order_by(RecognitionEvidence.recognition_id, RecognitionEvidence.position)
    )
    for recognition_id, evidence_id in rows:
        by_recognition[recognition_id].append(evidence_id)
    return by_recognition


async def get(
    session: AsyncSession, principal: Principal, recognition_id: str
) -> RecognitionRecord:
    row = await _live(session, principal, recognition_id)
    evidence = await _evidence_ids(session, [row.id])
    return _record(row, evidence.get(row.id, []))


async def list_page(
    database: Database,
    principal: Principal,
    filters: RecognitionFilter,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page:
    """One page, newest first, with each recognition's evidence ids.

    One statement: the page (``limit + 1`` rows, the extra one says whether
    another page follows) joined to its evidence links, built once per filter
    shape (:func:`_page_read`) and read as column rows on a bare connection —
    no second round trip for the evidence, no ORM session, no statement built
    per request.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1-{MAX_LIMIT}", field="limit")
    params: dict[str, Any] = {"org_id": principal.org_id, "limit": limit + 1}
    for name, value in (
        ("recipient_id", filters.recipient_id),
        ("giver_id", filters.giver_id),
        ("created_before", filters.created_before),
        ("created_after", filters.created_after),
        ("before_id", None if cursor is None else decode_cursor(cursor)),
    ):
        if value is not None:
            params[name] = value
    read = _page_read(frozenset(params) - _ALWAYS)
    found: list[RecognitionRecord] = []
    for row in await database.fetch(read, params):
        recognition_id, org_id, giver, recipient, message, category, created_at, linked = row
        if not found or found[-1].id != recognition_id:
            found.append(
                RecognitionRecord(
                    recognition_id, org_id, giver, recipient, message, category, [], created_at
                )
            )
        if linked is not None:
            found[-1].evidence_ids.append(linked)
    has_more = len(found) > limit
    items = found[:limit]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id) if has_more else None)


_ALWAYS = frozenset({"org_id", "limit"})
_PAGE_COLUMNS = (
    Recognition.id,
    Recognition.org_id,
    Recognition.giver_id,
    Recognition.recipient_id,
    Recognition.message,
    Recognition.category,
    Recognition.created_at,
)
# The optional conditions, by the parameter each binds (absent parameter: no condition).
_PAGE_FILTERS = {
    "recipient_id": lambda value: Recognition.recipient_id == value,
    "giver_id": lambda value: Recognition.giver_id == value,
    "created_before": lambda value: Recognition.created_at < value,
    "created_after": lambda value: Recognition.created_at > value,
    "before_id": lambda value: Recognition.id < value,
}


@functools.cache
def _page_read(filters: frozenset[str]) -> PreparedRead:
    """The page statement for one set of filters (at most 32, each built once)."""
    query = select(*_PAGE_COLUMNS).where(
        Recognition.org_id == bindparam("org_id"),
        Recognition.deleted_at.is_(None),
        *(_PAGE_FILTERS[name](bindparam(name)) for name in sorted(filters)),
    )
    page = query.order_by(Recognition.id.desc()).limit(bindparam("limit")).subquery("page")
    links = cast(Table, RecognitionEvidence.__table__)
    return PreparedRead(
        select(page, links.c.evidence_id.label("linked_evidence_id"))
        .outerjoin(links, links.c.recognition_id == page.c.id)
        .order_by(page.c.id.desc(), links.c.position)
    )


async def delete(
    session: AsyncSession, principal: Principal, recognition_id: str, *, clock: Clock = SYSTEM_CLOCK
) -> RecognitionRecord:
    row = await _live(session, principal, recognition_id)
    if row.giver_id != principal.user_id and not principal.is_admin:
        raise Forbidden("only the giver or an organisation admin may delete a recognition")
    row.deleted_at = clock.now()
    row.deleted_by = principal.user_id
    await session.flush()
    return _record(row, [])

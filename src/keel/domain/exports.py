"""Exports of an organisation's recognitions as CSV or JSON.

CSV cells that a spreadsheet would run as a formula are neutralised
(:mod:`keel.domain.csv_cells`); JSON carries the exact text.

A request only records the export (``pending``); the work happens off the
request path in :func:`run`, which streams rows in keyset batches into a blob
so memory stays flat however large the organisation is. ``run`` is safe to
call again for the same export: a finished one is left alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keel.audit import AuditEvent, Auditor, EventCode
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables import Export, Recognition, RecognitionEvidence
from keel.domain.csv_cells import csv_line
from keel.domain.principal import Principal
from keel.errors import InvalidInput, NotFound, NotReady
from keel.ids import is_valid_id, new_id
from keel.storage import BlobStore

log = structlog.get_logger(__name__)

BATCH = 500
COLUMNS = ("id", "giver_id", "recipient_id", "message", "category", "evidence_ids", "created_at")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


class ExportStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.JSON: "application/json"}


async def request(
    session: AsyncSession, principal: Principal, export_format: str, *, clock: Clock = SYSTEM_CLOCK
) -> Export:
    if export_format not in set(ExportFormat):
        raise InvalidInput("format must be 'csv' or 'json'", field="format")
    row = Export(
        id=new_id(),
        org_id=principal.org_id,
        requested_by=principal.user_id,
        format=export_format,
        status=ExportStatus.PENDING,
        created_at=clock.now(),
    )
    session.add(row)
    await session.flush()
    return row


async def get(session: AsyncSession, principal: Principal, export_id: str) -> Export:
    row = await session.get(Export, export_id) if is_valid_id(export_id) else None
    if row is None or row.org_id != principal.org_id:
        raise NotFound("no such export")
    return row


def ready_key(row: Export) -> str:
    if row.status != ExportStatus.SUCCEEDED or row.storage_key is None:
        raise NotReady(f"the export is {row.status}; poll its status until it is succeeded")
    return row.storage_key


async def _rows(database: Database, org_id: str) -> AsyncIterator[dict[str, object]]:
    after: str | None = None
    while True:
        async with database.read() as session:
            query = (
                select(Recognition)
                .where(Recognition.org_id == org_id, Recognition.deleted_at.is_(None))
                .order_by(Recognition.id)
                .limit(BATCH)
            )
            if after is not None:
                query = query.where(Recognition.id > after)
            batch = list(await session.scalars(query))
            links = await session.execute(
                select(RecognitionEvidence.recognition_id, RecognitionEvidence.evidence_id)
                .where(RecognitionEvidence.recognition_id.in_([r.id for r in batch]))
                .order_by(RecognitionEvidence.position)
            )
        evidence: dict[str, list[str]] = {}
        for recognition_id, evidence_id in links:
            evidence.setdefault(recognition_id, []).append(evidence_id)
        for row in batch:
            yield {
                "id": row.id,
                "giver_id": row.giver_id,
                "recipient_id": row.recipient_id,
                "message": row.message,
                "category": row.category,
                "evidence_ids": evidence.get(row.id, []),
                "created_at": row.created_at.isoformat(),
            }
        if len(batch) < BATCH:
            return
        after = batch[-1].id


async def _encode(
    export_format: ExportFormat, rows: AsyncIterator[dict[str, object]]
) -> AsyncIterator[tuple[bytes, int]]:
    """Yields (bytes, rows so far)."""
    count = 0
    if export_format is ExportFormat.CSV:
        yield csv_line(list(COLUMNS)), 0
        async for item in rows:
            count += 1
            values = [item[c] for c in COLUMNS]
            values[5] = " ".join(item["evidence_ids"])  # type: ignore[arg-type]
            yield csv_line(values), count
        return
    yield b"[", 0
    async for item in rows:
        prefix = b"," if count else b""
        count += 1
        yield prefix + json.dumps(item, ensure_ascii=False).encode(), count
    yield b"]", count


async def run(
    database: Database,
    store: BlobStore,
    export_id: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    reclaim_running: bool = False,
    audit: Auditor | None = None,
    final: bool = True,
    on_succeeded: Callable[[AsyncSession, Export], Awaitable[None]] | None = None,
) -> None:
    """Produce the export's file; ``reclaim_running`` also takes over a stalled run.

    ``final=False`` (a retry will follow) puts a failed export back to pending
    instead of failed. ``on_succeeded`` runs inside the transaction that marks
    the export succeeded (the job queue enqueues "export ready" there).
    """
    claimable = [ExportStatus.PENDING] + ([ExportStatus.RUNNING] if reclaim_running else [])
    started_at = clock.now()
    async with database.write() as session:
        # A conditional update is the claim: of two runners, exactly one moves the row on.
        claimed = await session.execute(
            update(Export)
            .where(Export.id == export_id, Export.status.in_(claimable))
            .values(status=ExportStatus.RUNNING, started_at=started_at)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return
        row = await session.get(Export, export_id)
        if row is None:  # pragma: no cover - claimed a row that vanished
            return
        org_id, export_format = row.org_id, ExportFormat(row.format)
        requested_by = row.requested_by
    writer = await store.begin_write(f"exports/{org_id}")
    count = 0
    try:
        async for data, count in _encode(export_format, _rows(database, org_id)):  # noqa: B007
            await writer.write(data)
        blob = await writer.commit()
    except Exception as error:
        await writer.abort()
        log.exception("export_failed", export_id=export_id)
        async with database.write() as session:
            await session.execute(
                update(Export)
                .where(_ours(export_id, started_at))
                .values(
                    status=ExportStatus.FAILED if final else ExportStatus.PENDING,
                    finished_at=clock.now() if final else None,
                    error=type(error).__name__,
                )
            )
            if audit is not None:
                await audit.record(
                    session, _completed(org_id, requested_by, export_id, ExportStatus.FAILED)
                )
        raise
    async with database.write() as session:
        # Fenced on this run's start time: a run that was taken over writes nothing.
        finished = await session.execute(
            update(Export)
            .where(_ours(export_id, started_at))
            .values(
                status=ExportStatus.SUCCEEDED,
                finished_at=clock.now(),
                storage_key=blob.key,
                size=blob.size,
                row_count=count,
                error=None,
            )
        )
        if finished.rowcount != 1:  # type: ignore[attr-defined]
            log.warning("export_run_superseded", export_id=export_id)
            await store.delete(blob.key)
            return
        if audit is not None:
            event = _completed(
                org_id, requested_by, export_id, ExportStatus.SUCCEEDED, rows=count, size=blob.size
            )
            await audit.record(session, event)
        if on_succeeded is not None:
            done = await session.get(Export, export_id)
            if done is not None:
                await on_succeeded(session, done)
    log.info("export_succeeded", export_id=export_id, rows=count, bytes=blob.size)


async def fail_abandoned(
    session: AsyncSession,
    export_id: str,
    reason: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    audit: Auditor | None = None,
) -> bool:
    """Mark an export ``failed`` because nothing will run it any more (its job is dead).

    In the caller's transaction. An export that already finished is left alone;
    returns whether this call failed it.
    """
    row = await session.get(Export, export_id) if is_valid_id(export_id) else None
    if row is None:
        return False
    failed = await session.execute(
        update(Export)
        .where(
            Export.id == export_id,
            Export.status.in_([ExportStatus.PENDING, ExportStatus.RUNNING]),
        )
        .values(status=ExportStatus.FAILED, finished_at=clock.now(), error=reason)
        .execution_options(synchronize_session=False)
    )
    if failed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    if audit is not None:
        event = _completed(row.org_id, row.requested_by, export_id, ExportStatus.FAILED)
        await audit.record(session, event)
    log.error("export_failed", export_id=export_id, reason=reason)
    return True


def _ours(export_id: str, started_at: datetime) -> ColumnElement[bool]:
    return and_(
        Export.id == export_id,
        Export.status == ExportStatus.RUNNING,
        Export.started_at == started_at,
    )


def _completed(
    org_id: str,
    requested_by: str,
    export_id: str,
    status: ExportStatus,
    *,
    rows: int | None = None,
    size: int | None = None,
) -> AuditEvent:
    return AuditEvent(
        EventCode.EXPORT_COMPLETED,
        org_id=org_id,
        subject_id=requested_by,
        fields={"export_id": export_id, "status": status.value, "row_count": rows, "size": size},
    )


async def unfinished(database: Database) -> list[str]:
    """Exports that were requested but never started (e.g. the process stopped first)."""
    async with database.read() as session:
        ids = await session.scalars(select(Export.id).where(Export.status == ExportStatus.PENDING))
        return list(ids)

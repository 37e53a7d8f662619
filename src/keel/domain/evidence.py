"""Evidence files: uploaded once, read back byte for byte, deleted softly.

Bytes go to the :class:`~keel.storage.BlobStore` under the organisation's own
namespace (so content addressing never crosses tenants); the row that makes
them visible is written only after the bytes are durable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.tables import Evidence
from keel.domain.principal import Principal
from keel.errors import Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType
from keel.ids import is_valid_id, new_id
from keel.storage import BlobStore, StoredBlob


@dataclass(frozen=True, slots=True)
class UploadRules:
    max_bytes: int
    allowed_content_types: Sequence[str]

    def check_type(self, content_type: str) -> None:
        if content_type not in self.allowed_content_types:
            raise UnsupportedMediaType(
                f"content type {content_type!r} is not accepted",
                allowed=list(self.allowed_content_types),
            )


def namespace_for(org_id: str, kind: str = "evidence") -> str:
    return f"{kind}/{org_id}"


async def receive(
    store: BlobStore, principal: Principal, chunks: AsyncIterator[bytes], *, max_bytes: int
) -> StoredBlob:
    """Stream an upload into storage, stopping — and keeping nothing — past ``max_bytes``."""
    writer = await store.begin_write(namespace_for(principal.org_id))
    try:
        async for chunk in chunks:
            if writer.size + len(chunk) > max_bytes:
                raise PayloadTooLarge(
                    f"the file is larger than the {max_bytes}-byte limit", limit=max_bytes
                )
            await writer.write(chunk)
    except BaseException:
        await writer.abort()
        raise
    return await writer.commit()


async def record(
    session: AsyncSession,
    principal: Principal,
    blob: StoredBlob,
    *,
    filename: str,
    content_type: str,
    clock: Clock = SYSTEM_CLOCK,
) -> Evidence:
    row = Evidence(
        id=new_id(),
        org_id=principal.org_id,
        uploader_id=principal.user_id,
        filename=filename,
        content_type=content_type,
        size=blob.size,
        sha256=blob.sha256,
        storage_key=blob.key,
        created_at=clock.now(),
    )
    session.add(row)
    await session.flush()
    return row


async def get(session: AsyncSession, principal: Principal, evidence_id: str) -> Evidence:
    row = await session.get(Evidence, evidence_id) if is_valid_id(evidence_id) else None
    if row is None or row.org_id != principal.org_id or row.deleted_at is not None:
        raise NotFound("no such evidence")
    return row


async def bytes_used(session: AsyncSession, org_id: str) -> int:
    """Bytes of live evidence the organisation holds (what a storage quota counts)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Evidence.size), 0)).where(
            Evidence.org_id == org_id, Evidence.deleted_at.is_(None)
        )
    )
    return int(total or 0)


async def key_in_use(session: AsyncSession, org_id: str, storage_key: str) -> bool:
    """Whether a live evidence row still points at these bytes."""
    count = await session.scalar(
        select(func.count()).where(
            Evidence.org_id == org_id,
            Evidence.storage_key == storage_key,
            Evidence.deleted_at.is_(None),
        )
    )
    return bool(count)


async def delete(
    session: AsyncSession, principal: Principal, evidence_id: str, *, clock: Clock = SYSTEM_CLOCK
) -> str | None:
    """Soft-delete; returns the storage key if no live row shares it any more."""
    row = await get(session, principal, evidence_id)
    if row.uploader_id != principal.user_id and not principal.is_admin:
        raise Forbidden("only the uploader or an organisation admin may delete evidence")
    row.deleted_at = clock.now()
    await session.flush()
    return None if await key_in_use(session, row.org_id, row.storage_key) else row.storage_key

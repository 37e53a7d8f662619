"""/v1/evidence: streamed uploads and downloads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.responses import StreamingResponse

from keel.api.auditing import ClientIp, by_principal
from keel.api.dependencies import CurrentPrincipal, UploadParts
from keel.api.downloads import open_download
from keel.api.multipart import FileFieldReader
from keel.api.schemas import EvidenceOut
from keel.api.text import Line
from keel.audit import EventCode
from keel.domain import evidence
from keel.errors import PayloadTooLarge
from keel.guard.shed import Priority
from keel.guard.storage_quota import StorageQuota, StorageQuotaExceeded
from keel.http.facts import Keys, RouteFacts, route
from keel.http.problems import problem_responses
from keel.http.recorded import recorded

router = APIRouter(prefix="/v1/evidence", tags=["evidence"])

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


@route(
    router.post,
    "",
    RouteFacts("evidence.upload", keys=Keys.OPTIONAL, priority=Priority.BULK),
    status_code=201,
    response_model=EvidenceOut,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses=problem_responses(400, 401, 409, 413, 415, 422, 429, 503),
)
async def upload_evidence(
    request: Request, principal: CurrentPrincipal, services: UploadParts, ip: ClientIp
) -> Response:
    rules = services.upload_rules
    declared = _declared_length(request)
    if declared is not None and declared > rules.max_bytes + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(
            f"the file is larger than the {rules.max_bytes}-byte limit", limit=rules.max_bytes
        )
    quota = services.limits.storage_quota.limit_for(principal)
    ceiling = rules.max_bytes
    used = 0
    if quota is not None:
        async with services.database.read() as session:
            used = await evidence.bytes_used(session, principal.org_id)
        if used >= quota or (declared is not None and used + declared - MULTIPART_OVERHEAD > quota):
            raise StorageQuota.refuse(quota, used)
        ceiling = min(ceiling, quota - used)
    reader = FileFieldReader(request.stream(), request.headers.get("content-type"), "file")
    part = await reader.find()
    rules.check_type(part.content_type)
    try:
        blob = await evidence.receive(services.store, principal, reader.chunks(), max_bytes=ceiling)
    except PayloadTooLarge:
        if ceiling < rules.max_bytes and quota is not None:
            raise StorageQuota.refuse(quota, used) from None
        raise
    # Read to the end of the body before the transaction: a keyed upload's
    # fingerprint is the hash of all of it, and no transaction waits on the network.
    await reader.finish()
    try:
        async with services.database.write() as session, recorded(request, session) as outcome:
            if quota is not None:
                used = await evidence.bytes_used(session, principal.org_id)
                if used + blob.size > quota:
                    raise StorageQuota.refuse(quota, used)
            row = await evidence.record(
                session,
                principal,
                blob,
                filename=part.filename,
                content_type=part.content_type,
                clock=services.clock,
            )
            event = by_principal(
                EventCode.EVIDENCE_UPLOADED,
                principal,
                ip,
                evidence_id=row.id,
                size=row.size,
                sha256=row.sha256,
                content_type=row.content_type,
            )
            await services.audit.record(session, event)
            return outcome.respond(EvidenceOut.model_validate(row), status_code=201)
    except StorageQuotaExceeded:
        async with services.database.read() as session:
            shared = await evidence.key_in_use(session, principal.org_id, blob.key)
        if not shared:
            await services.store.delete(blob.key)
        raise


@router.get(
    "/{evidence_id}", response_model=EvidenceOut, responses=problem_responses(401, 404, 422, 503)
)
async def get_evidence(
    evidence_id: Line, principal: CurrentPrincipal, services: UploadParts
) -> EvidenceOut:
    async with services.database.query() as session:
        row = await evidence.get(session, principal, evidence_id)
    return EvidenceOut.model_validate(row)


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The exact bytes, with the content type they were uploaded with",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {
        "description": "The one byte range asked for with `Range`, described by `Content-Range`",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "Not modified: `If-None-Match` names the current ETag"},
    **problem_responses(401, 404, 416, 422, 429, 503),
}


@route(
    router.get,
    "/{evidence_id}/content",
    RouteFacts("evidence.download"),
    response_class=StreamingResponse,
    responses=_DOWNLOAD_RESPONSES,
)
async def download_evidence(
    request: Request,
    evidence_id: Line,
    principal: CurrentPrincipal,
    services: UploadParts,
    ip: ClientIp,
) -> Response:
    async with services.database.read() as session:
        row = await evidence.get(session, principal, evidence_id)
    download = await open_download(
        request.headers, services.store, row.storage_key, etag=f'"{row.sha256}"', size=row.size
    )
    if download.body is not None:
        await services.audit.record_now(
            by_principal(EventCode.EVIDENCE_DOWNLOADED, principal, ip, evidence_id=row.id)
        )
    return download.respond(row.content_type, row.filename)


@route(
    router.delete,
    "/{evidence_id}",
    RouteFacts("evidence.delete"),
    status_code=204,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def delete_evidence(
    evidence_id: Line, principal: CurrentPrincipal, services: UploadParts, ip: ClientIp
) -> Response:
    async with services.database.write() as session:
        uploader_id = (await evidence.get(session, principal, evidence_id)).uploader_id
        orphan_key = await evidence.delete(session, principal, evidence_id, clock=services.clock)
        event = by_principal(
            EventCode.EVIDENCE_DELETED,
            principal,
            ip,
            subject_id=uploader_id,
            evidence_id=evidence_id,
        )
        await services.audit.record(session, event)
    if orphan_key is not None:
        await services.store.delete(orphan_key)
    return Response(status_code=204)

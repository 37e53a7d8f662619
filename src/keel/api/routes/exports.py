"""/v1/exports: requested here, produced off the request path."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.responses import StreamingResponse

from keel.api.auditing import ClientIp, by_principal
from keel.api.dependencies import CurrentPrincipal, ExportParts, ExportWriter
from keel.api.downloads import open_download
from keel.api.schemas import ExportCreate, ExportOut
from keel.api.text import Line
from keel.audit import EventCode
from keel.domain import exports
from keel.guard.shed import Priority
from keel.http.facts import Keys, RouteFacts, route
from keel.http.problems import problem_responses
from keel.http.recorded import recorded
from keel.jobs.exports import enqueue_export
from keel.storage import content_etag

router = APIRouter(prefix="/v1/exports", tags=["exports"])


@route(
    router.post,
    "",
    RouteFacts("exports.create", keys=Keys.REQUIRED, priority=Priority.BULK),
    status_code=202,
    response_model=ExportOut,
    responses=problem_responses(400, 401, 409, 413, 422, 429, 503),
)
async def request_export(request: Request, body: ExportCreate, caller: ExportWriter) -> Response:
    principal, services = caller.principal, caller.services
    # The Idempotency-Key's outcome commits in this same transaction: a
    # key is never marked done for an export that was not stored, nor the reverse.
    async with services.database.write() as session, recorded(request, session) as outcome:
        row = await exports.request(session, principal, body.format, clock=services.clock)
        event = by_principal(
            EventCode.EXPORT_REQUESTED, principal, caller.ip, export_id=row.id, format=row.format
        )
        await services.audit.record(session, event)
        # In the same transaction: the export and its job commit together or not at all.
        await enqueue_export(session, row.id, clock=services.clock)
        return outcome.respond(
            ExportOut.model_validate(row),
            status_code=202,
            headers={"Location": f"/v1/exports/{row.id}"},
        )


@router.get(
    "/{export_id}", response_model=ExportOut, responses=problem_responses(401, 404, 422, 503)
)
async def get_export(
    export_id: Line, principal: CurrentPrincipal, services: ExportParts
) -> ExportOut:
    async with services.database.read() as session:
        row = await exports.get(session, principal, export_id)
    return ExportOut.model_validate(row)


@route(
    router.get,
    "/{export_id}/content",
    RouteFacts("exports.download"),
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}},
        206: {
            "description": "The one byte range asked for, described by `Content-Range`",
            "content": {"text/csv": {}, "application/json": {}},
        },
        304: {"description": "Not modified: `If-None-Match` names the current ETag"},
        **problem_responses(401, 404, 409, 416, 422, 429, 503),
    },
)
async def download_export(
    request: Request,
    export_id: Line,
    principal: CurrentPrincipal,
    services: ExportParts,
    ip: ClientIp,
) -> Response:
    async with services.database.read() as session:
        row = await exports.get(session, principal, export_id)
    key = exports.ready_key(row)
    download = await open_download(
        request.headers, services.store, key, etag=content_etag(key), size=row.size or 0
    )
    if download.body is not None:
        await services.audit.record_now(
            by_principal(EventCode.EXPORT_DOWNLOADED, principal, ip, export_id=row.id)
        )
    fmt = exports.ExportFormat(row.format)
    return download.respond(exports.MEDIA_TYPES[fmt], f"recognitions-{row.id}.{fmt.value}")

"""/v1/exports: requested here, produced off the request path."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.responses import StreamingResponse

from keel.api.dependencies import AppServices, CurrentPrincipal
from keel.api.problems import problem_responses
from keel.api.routes.evidence import primed
from keel.api.schemas import ExportCreate, ExportOut
from keel.domain import exports
from keel.jobs.exports import enqueue_export

router = APIRouter(prefix="/v1/exports", tags=["exports"])


@router.post(
    "",
    status_code=202,
    response_model=ExportOut,
    responses=problem_responses(400, 401, 409, 422, 429, 503),
)
async def request_export(
    body: ExportCreate, principal: CurrentPrincipal, services: AppServices, response: Response
) -> ExportOut:
    async with services.database.write() as session:
        row = await exports.request(session, principal, body.format, clock=services.clock)
        # In the same transaction: the export and its job commit together or not at all.
        await enqueue_export(session, row.id, clock=services.clock)
    response.headers["Location"] = f"/v1/exports/{row.id}"
    return ExportOut.model_validate(row)


@router.get("/{export_id}", response_model=ExportOut, responses=problem_responses(401, 404, 503))
async def get_export(
    export_id: str, principal: CurrentPrincipal, services: AppServices
) -> ExportOut:
    async with services.database.read() as session:
        row = await exports.get(session, principal, export_id)
    return ExportOut.model_validate(row)


@router.get(
    "/{export_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}},
        **problem_responses(401, 404, 409, 429, 503),
    },
)
async def download_export(
    export_id: str, principal: CurrentPrincipal, services: AppServices
) -> StreamingResponse:
    async with services.database.read() as session:
        row = await exports.get(session, principal, export_id)
    key = exports.ready_key(row)
    body = await primed(services.store.read(key))
    fmt = exports.ExportFormat(row.format)
    return StreamingResponse(
        body,
        media_type=exports.MEDIA_TYPES[fmt],
        headers={
            "Content-Length": str(row.size or 0),
            "Content-Disposition": f'attachment; filename="recognitions-{row.id}.{fmt.value}"',
        },
    )

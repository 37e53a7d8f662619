"""/v1/recognitions"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from keel.api.auditing import by_principal
from keel.api.dependencies import CurrentPrincipal, RecordingParts, RecordingWriter
from keel.api.query import Timestamp
from keel.api.schemas import RecognitionCreate, RecognitionOut, RecognitionPage
from keel.api.text import Line
from keel.audit import EventCode
from keel.domain import recognitions
from keel.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT
from keel.http.facts import Keys, RouteFacts, route
from keel.http.problems import problem_responses
from keel.http.recorded import recorded

router = APIRouter(prefix="/v1/recognitions", tags=["recognitions"])


@route(
    router.post,
    "",
    RouteFacts("recognitions.create", keys=Keys.REQUIRED),
    status_code=201,
    response_model=RecognitionOut,
    responses=problem_responses(400, 401, 409, 413, 422, 429, 503),
)
async def create_recognition(
    request: Request, body: RecognitionCreate, caller: RecordingWriter
) -> Response:
    principal, services = caller.principal, caller.services
    new = recognitions.NewRecognition(
        recipient_id=body.recipient_id,
        message=body.message,
        category=body.category,
        evidence_ids=body.evidence_ids,
    )
    # The Idempotency-Key's outcome commits in this same transaction: a
    # key is never marked done for a recognition that was not stored, nor the reverse.
    # The audit append goes last: the organisation's chain head stays locked from it to
    # the commit, so nothing else may run under that lock.
    async with services.database.write() as session, recorded(request, session) as outcome:
        record = await recognitions.create(session, principal, new, clock=services.clock)
        response = outcome.respond(RecognitionOut.model_validate(record), status_code=201)
        await outcome.store()
        event = by_principal(
            EventCode.RECOGNITION_CREATED,
            principal,
            caller.ip,
            subject_id=record.recipient_id,
            recognition_id=record.id,
            evidence_count=len(record.evidence_ids),
        )
        await services.audit.record(session, event)
        return response


@router.get("", response_model=RecognitionPage, responses=problem_responses(400, 401, 422, 503))
async def list_recognitions(
    principal: CurrentPrincipal,
    services: RecordingParts,
    recipient_id: Annotated[Line | None, Query(max_length=64)] = None,
    giver_id: Annotated[Line | None, Query(max_length=64)] = None,
    created_before: Timestamp = None,
    created_after: Timestamp = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[Line | None, Query(max_length=200)] = None,
) -> RecognitionPage:
    filters = recognitions.RecognitionFilter(
        recipient_id=recipient_id,
        giver_id=giver_id,
        created_before=created_before,
        created_after=created_after,
    )
    page = await recognitions.list_page(
        services.database, principal, filters, limit=limit, cursor=cursor
    )
    return RecognitionPage(
        items=[RecognitionOut.model_validate(item) for item in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{recognition_id}",
    response_model=RecognitionOut,
    responses=problem_responses(401, 404, 422, 503),
)
async def get_recognition(
    recognition_id: Line, principal: CurrentPrincipal, services: RecordingParts
) -> RecognitionOut:
    async with services.database.query() as session:
        record = await recognitions.get(session, principal, recognition_id)
    return RecognitionOut.model_validate(record)


@route(
    router.delete,
    "/{recognition_id}",
    RouteFacts("recognitions.delete"),
    status_code=204,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def delete_recognition(recognition_id: Line, caller: RecordingWriter) -> Response:
    principal, services = caller.principal, caller.services
    async with services.database.write() as session:
        deleted = await recognitions.delete(
            session, principal, recognition_id, clock=services.clock
        )
        event = by_principal(
            EventCode.RECOGNITION_DELETED,
            principal,
            caller.ip,
            subject_id=deleted.giver_id,
            recognition_id=deleted.id,
        )
        await services.audit.record(session, event)
    return Response(status_code=204)

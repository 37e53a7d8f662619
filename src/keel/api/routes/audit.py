"""/v1/audit: an organisation's own audit events, for its admins.

Members get 403; admins see their organisation's chain only (the chain is
chosen from the principal, never from a parameter). Identifiers in the
answer are the stored pseudonyms; ``user_id`` filters by a raw user id,
hashed under every key in the ring so older events are found too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from keel.api.dependencies import AuditParts, CurrentPrincipal
from keel.api.query import Timestamp
from keel.api.text import Line
from keel.audit import AuditQuery, EventCode, stripes
from keel.audit import search as audit_search
from keel.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from keel.errors import Forbidden
from keel.http.facts import RouteFacts, route
from keel.http.problems import problem_responses

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditEventOut(BaseModel):
    id: str
    chain: int  # which of the organisation's chains (keel.audit.stripes); seq is per chain
    seq: int
    occurred_at: str
    code: EventCode  # the registry's codes: an enum in the OpenAPI document
    key_id: str
    actor: str | None
    subject: str | None
    token: str | None
    ip: str | None
    fields: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


@route(
    router.get,
    "",
    RouteFacts("admin.audit"),
    response_model=AuditPage,
    responses=problem_responses(400, 401, 403, 422, 503),
)
async def list_audit_events(
    principal: CurrentPrincipal,
    services: AuditParts,
    code: Annotated[list[EventCode] | None, Query()] = None,
    user_id: Annotated[Line | None, Query(max_length=64)] = None,
    since: Timestamp = None,
    until: Timestamp = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[Line | None, Query(max_length=200)] = None,
) -> AuditPage:
    if not principal.is_admin:
        raise Forbidden("only organisation admins may read the audit log")
    query = AuditQuery(
        org_id=principal.org_id, codes=tuple(code or ()), user_id=user_id, since=since, until=until
    )
    before = decode_cursor(cursor) if cursor else None
    rows, more = await audit_search.page(
        services.database, services.audit.keys, query, limit=limit, before_id=before
    )
    items = []
    for row in rows:
        item = audit_search.as_dict(row)
        item["chain"] = stripes.split(item.pop("chain_id"))[1]
        items.append(AuditEventOut.model_validate(item))
    return AuditPage(items=items, next_cursor=encode_cursor(rows[-1].id) if more else None)

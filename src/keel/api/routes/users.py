"""/v1/users"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from keel.api.dependencies import CurrentPrincipal, ReadParts
from keel.api.schemas import UserOut, UserPage
from keel.api.text import Line
from keel.domain import orgs
from keel.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from keel.http.problems import problem_responses

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get("/me", response_model=UserOut, responses=problem_responses(401, 503))
async def me(principal: CurrentPrincipal, services: ReadParts) -> UserOut:
    user = await orgs.user_in_org(services.database, principal.org_id, principal.user_id)
    return UserOut.model_validate(user)


@router.get("", response_model=UserPage, responses=problem_responses(400, 401, 422, 503))
async def list_users(
    principal: CurrentPrincipal,
    services: ReadParts,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[Line | None, Query(max_length=200)] = None,
) -> UserPage:
    after = decode_cursor(cursor) if cursor else None
    async with services.database.query() as session:
        users = list(await orgs.list_users(session, principal.org_id, after=after, limit=limit + 1))
    has_more = len(users) > limit
    users = users[:limit]
    return UserPage(
        items=[UserOut.model_validate(u) for u in users],
        next_cursor=encode_cursor(users[-1].id) if has_more else None,
    )
